//! An invoice that expired unpaid is forgotten once the retention has passed (after the
//! next block), in memory and in the database; unexpired ones stay.

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoices_expired_unpaid_are_forgotten_after_the_retention() {
    let devnet = Arc::new(chain::Devnet::in_memory());
    let dir = tempfile::tempdir().unwrap();
    let configure = |c: &mut hub::node::NodeConfig| {
        c.unpaid_invoice_retention = Duration::from_secs(1);
    };
    let hub = start_configured(&devnet, dir.path(), None, configure).await;
    let short = hub
        .create_invoice(Some(1_000), "short", 1, "")
        .await
        .unwrap();
    let long = hub
        .create_invoice(Some(1_000), "long", 3600, "")
        .await
        .unwrap();
    // A block before the retention has passed forgets nothing.
    devnet
        .generate_to_script(1, &elsewhere().script_pubkey())
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(hub.invoice(&short.payment_hash, None).is_some());
    // The short one expires, the retention passes, a block comes: it is forgotten.
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    devnet
        .generate_to_script(1, &elsewhere().script_pubkey())
        .unwrap();
    wait_until("the expired invoice forgotten", || async {
        hub.invoice(&short.payment_hash, None).is_none()
    })
    .await;
    assert!(hub.invoice(&long.payment_hash, None).is_some());
    // Gone from the database too.
    hub.shutdown().await;
    drop(hub);
    let hub = start_configured(&devnet, dir.path(), None, configure).await;
    assert!(hub.invoice(&short.payment_hash, None).is_none());
    assert!(hub.invoice(&long.payment_hash, None).is_some());
}
