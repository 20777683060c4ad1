//! The test harness itself (`common`): what it promises the other test files.

mod common;

use std::time::Duration;

use common::*;

/// A body that waits for something that never comes fails by name once its bound has
/// passed, instead of holding the test run.
#[test]
#[should_panic(expected = "the test body did not finish within 200ms")]
fn a_body_that_never_finishes_fails_as_hung() {
    run_within(Duration::from_millis(200), async {
        let (_server, _client) = pair();
        std::future::pending::<()>().await;
    });
}
