//! The fuzzing loop: seeds first, then mutated corpus entries, each run under
//! `catch_unwind`; inputs that reach a new label join the corpus, panicking inputs are
//! kept (and saved) with their panic message.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use crate::mutate::{mutate, mutate_json};
use crate::rng::Rng;
use crate::targets::Target;

/// The corpus stops growing here, so long runs keep mutating old entries too.
const MAX_CORPUS: usize = 4096;

/// An input that made the target panic.
#[derive(Debug, Clone)]
pub struct Crash {
    /// The input.
    pub input: Vec<u8>,
    /// The panic message and location.
    pub message: String,
    /// Where it was saved, if it was.
    pub saved: Option<PathBuf>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Target name.
    pub target: &'static str,
    /// The seed of the random generator.
    pub seed: u64,
    /// Inputs executed (seeds included).
    pub executions: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Corpus size at the end.
    pub corpus: usize,
    /// Distinct labels seen.
    pub labels: usize,
    /// Panics, one per panic location.
    pub crashes: Vec<Crash>,
}

impl Stats {
    /// Executions per second.
    pub fn per_second(&self) -> f64 {
        self.executions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

thread_local! {
    static FUZZING: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once) a panic hook that, on fuzzing threads, records the message instead of
/// printing it; other threads keep the previous hook.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if FUZZING.with(Cell::get) {
                let msg = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into());
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}{at}")));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `target` for `iterations` executions from `seed`; panicking inputs are written to
/// `crash_dir` when given.
pub fn run(target: &Target, iterations: u64, seed: u64, crash_dir: Option<&Path>) -> Stats {
    install_hook();
    FUZZING.with(|f| f.set(true));
    let mut rng = Rng::new(seed);
    let mut corpus: Vec<Vec<u8>> = (target.seeds)();
    let mut labels = HashSet::new();
    let mut crashes: Vec<Crash> = Vec::new();
    let mut executions = 0u64;
    let start = Instant::now();

    let mut execute = |input: Vec<u8>, corpus: &mut Vec<Vec<u8>>| {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(&input)));
        match outcome {
            Ok(label) => {
                if labels.insert(label) && corpus.len() < MAX_CORPUS {
                    corpus.push(input);
                }
            }
            Err(_) => {
                let message = LAST_PANIC
                    .with(|p| p.borrow_mut().take())
                    .unwrap_or_else(|| "panic".into());
                // One crash per panic location: messages often embed the input.
                let site = |m: &str| m.rsplit(" at ").next().unwrap_or_default().to_string();
                if !crashes.iter().any(|c| site(&c.message) == site(&message)) {
                    let saved = crash_dir.and_then(|d| save(d, target.name, &input));
                    crashes.push(Crash {
                        input,
                        message,
                        saved,
                    });
                }
            }
        }
    };

    let seeds = corpus.clone();
    for s in seeds.into_iter().take(iterations as usize) {
        execute(s, &mut corpus);
        executions += 1;
    }
    while executions < iterations {
        let base = &corpus[rng.below(corpus.len())];
        let input = if target.json && rng.one_in(2) {
            mutate_json(&mut rng, base)
                .unwrap_or_else(|| mutate(&mut rng, base, &corpus, target.dictionary))
        } else {
            mutate(&mut rng, base, &corpus, target.dictionary)
        };
        execute(input, &mut corpus);
        executions += 1;
    }
    FUZZING.with(|f| f.set(false));
    Stats {
        target: target.name,
        seed,
        executions,
        elapsed: start.elapsed(),
        corpus: corpus.len(),
        labels: labels.len(),
        crashes,
    }
}

/// Writes a crashing input as `<dir>/<target>-<hash>.bin`.
fn save(dir: &Path, target: &str, input: &[u8]) -> Option<PathBuf> {
    // FNV-1a: a stable name, so the same input found twice is one file.
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    std::fs::create_dir_all(dir).ok()?;
    let path = dir.join(format!("{target}-{hash:016x}.bin"));
    std::fs::write(&path, input).ok()?;
    Some(path)
}
