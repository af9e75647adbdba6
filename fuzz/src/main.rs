//! `fuzz <target|all> [--iterations N] [--seed S]`: runs targets and reports executions,
//! speed and any panic (with the input in hex, saved under `fuzz/crashes/`).

use std::path::PathBuf;

use anyhow::{bail, Context};
use fuzz::runner;
use fuzz::targets;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut which = None;
    let mut iterations = 1_000_000u64;
    let mut seed = 1u64;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--iterations" | "-n" => {
                iterations = args
                    .next()
                    .context("--iterations needs a value")?
                    .replace('_', "")
                    .parse()
                    .context("--iterations")?;
            }
            "--seed" | "-s" => {
                seed = args
                    .next()
                    .context("--seed needs a value")?
                    .parse()
                    .context("--seed")?;
            }
            "--help" | "-h" => {
                usage();
                return Ok(());
            }
            name if which.is_none() => which = Some(name.to_string()),
            other => bail!("unexpected argument {other}"),
        }
    }
    let Some(which) = which else {
        usage();
        bail!("no target given");
    };
    let chosen = if which == "all" {
        targets::all()
    } else {
        vec![targets::by_name(&which).with_context(|| format!("no target {which}"))?]
    };
    let crash_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crashes");
    let mut failed = false;
    for t in &chosen {
        let s = runner::run(t, iterations, seed, Some(&crash_dir));
        println!(
            "{:<14} seed {:<6} executions {:>10}  {:>8.0} exec/s  {:>7.1} s  corpus {:>5}  labels {:>5}  panics {}",
            s.target,
            s.seed,
            s.executions,
            s.per_second(),
            s.elapsed.as_secs_f64(),
            s.corpus,
            s.labels,
            s.crashes.len()
        );
        for c in &s.crashes {
            failed = true;
            println!("  PANIC: {}", c.message);
            println!(
                "  input ({} bytes): {}",
                c.input.len(),
                hex::encode(&c.input)
            );
            if let Some(p) = &c.saved {
                println!("  saved: {}", p.display());
            }
        }
    }
    if failed {
        bail!("panics found");
    }
    Ok(())
}

fn usage() {
    let names: Vec<&str> = targets::all().iter().map(|t| t.name).collect();
    eprintln!(
        "usage: fuzz <target|all> [--iterations N] [--seed S]\ntargets: {}",
        names.join(", ")
    );
}
