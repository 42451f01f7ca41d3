//! The store contract suite against the store `TEST_STORE` names
//! (`memory`, `embedded`, `dynamodb`; the README's test command runs each).

use chat_core::contract::{connections_checks, store_checks};
use chat_tests::{open_store, store_kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_passes_every_contract_check() {
    let dir = tempfile::tempdir().unwrap();
    let (store, conns) = open_store(dir.path()).await.unwrap();
    let mut failed = Vec::new();
    for (name, check) in store_checks() {
        // Each check in its own task, so one failure names itself and the rest still run.
        match tokio::spawn(check(store.clone())).await {
            Ok(()) => eprintln!("ok   {name} [{}]", store_kind()),
            Err(e) => {
                eprintln!("FAIL {name} [{}]: {e}", store_kind());
                failed.push(name);
            }
        }
    }
    for (name, check) in connections_checks() {
        if tokio::spawn(check(conns.clone())).await.is_err() {
            failed.push(name);
        }
    }
    assert!(
        failed.is_empty(),
        "failed checks on {}: {failed:?}",
        store_kind()
    );
}
