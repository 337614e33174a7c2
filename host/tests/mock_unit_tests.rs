//! librdkafka's own unit tests of its mock cluster, which eddy embeds as its
//! broker, including those of eddy's patch (vendor/rdkafka-sys/PATCHES.md):
//! transaction markers, the last stable offset, aborted-transaction lists.
//!
//! Its own test binary: it sets an environment variable, which is only sound
//! while no other thread runs.

use rdkafka::bindings as rdsys;

#[test]
fn librdkafka_mock_unit_tests_pass() {
    // SAFETY: this binary's only test sets the variable before any thread
    // that could read the environment exists.
    unsafe { std::env::set_var("RD_UT_TEST", "mock") };
    // SAFETY: rd_kafka_unittest takes no arguments and only runs the unit
    // tests RD_UT_TEST selects.
    let failures = unsafe { rdsys::rd_kafka_unittest() };
    assert_eq!(
        failures, 0,
        "librdkafka's mock unit tests failed (see stderr)"
    );
}
