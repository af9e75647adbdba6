//! A merchant cannot aim the hub's webhook deliveries at the hub's own network: loopback,
//! private and link-local addresses are refused when the webhook is registered (IP
//! literals) and when a delivery connects (names, resolved then), redirects are not
//! followed, and no request reaches a listener on those addresses.

use scenarios::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A listener on `ip`:0 that counts connections and answers each with `reply`.
async fn listener(ip: &str, reply: &'static str) -> (u16, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = l.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    (port, hits)
}

async fn delivery_error(api: &Api, node: &Proc, hook: &str) -> Value {
    let id = api
        .ok(
            &node.api,
            "op",
            "POST",
            &format!("/v1/webhooks/{hook}/test"),
            None,
        )
        .await["delivery_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut found = Value::Null;
    wait_for("the delivery attempted", async || {
        let all = api
            .ok(&node.api, "op", "GET", "/v1/webhooks/deliveries", None)
            .await;
        found = all
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id.as_str())
            .cloned()
            .unwrap_or(Value::Null);
        found["attempts"].as_u64() >= Some(1)
    })
    .await;
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_never_reach_private_addresses() {
    let (port, hits) = listener("127.0.0.1", "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
    let dir = tempfile::tempdir().unwrap();
    // The hub as deployed: no address allowed beyond public ones. (The harness allows
    // 127.0.0.1 for the other tests' receivers; this one removes that, and allows only
    // 127.0.0.2, where a redirecting "receiver" stands for a public server.)
    let mut args = devnet_args(dir.path().join("hub").to_str().unwrap(), "op");
    let i = args.iter().position(|a| a == "--webhook-allow-ip").unwrap();
    args[i + 1] = "127.0.0.2".into();
    let node = spawn(&args);
    let api = Api::default();
    let add = |url: String| {
        let api = api.clone();
        let base = node.api.clone();
        async move {
            api.raw(
                &base,
                Some("op"),
                "POST",
                "/v1/webhooks",
                Some(json!({"url": url, "events": ["invoice.paid"]})),
            )
            .await
        }
    };

    // IP literals: refused at registration with a stable code.
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        "http://10.0.0.1/hook".to_string(),
        "http://192.168.1.1/hook".to_string(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[::ffff:127.0.0.1]/hook".to_string(),
    ] {
        let (status, body) = add(url.clone()).await;
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(body["error"]["code"], "webhook_url_refused", "{url}");
    }

    // A name that resolves to 127.0.0.1: accepted as a name, refused when delivering.
    let (status, hook) = add(format!("http://localhost:{port}/hook")).await;
    assert_eq!(status, 201, "{hook}");
    let d = delivery_error(&api, &node, hook["id"].as_str().unwrap()).await;
    assert!(
        d["last_error"].as_str().unwrap().contains("not allowed"),
        "{d}"
    );

    // A redirect to 127.0.0.1 is not followed (a 307 would even re-POST the body).
    let location = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{port}/hook\r\ncontent-length: 0\r\n\r\n"
    );
    let (redirect_port, redirect_hits) =
        listener("127.0.0.2", Box::leak(location.into_boxed_str())).await;
    let (status, hook) = add(format!("http://127.0.0.2:{redirect_port}/hook")).await;
    assert_eq!(status, 201, "{hook}");
    let d = delivery_error(&api, &node, hook["id"].as_str().unwrap()).await;
    assert_eq!(d["last_error"], "HTTP 307 Temporary Redirect", "{d}");
    assert!(redirect_hits.load(Ordering::SeqCst) >= 1);

    // Nothing ever reached the listener on 127.0.0.1.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a request reached 127.0.0.1"
    );
}
