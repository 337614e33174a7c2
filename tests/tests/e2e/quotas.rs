//! A daemon's quotas: modules stored (count and bytes, with deletion of
//! modules no pipeline runs), pipelines, and tasks per pipeline. A request
//! over a quota is refused with RESOURCE_EXHAUSTED naming it; a task over
//! one waits with its status saying which, while the others run.

use eddy_tests::{Broker, Daemon, Rec, consume, plugin, produce, v1, wait_for};
use std::time::Duration;

#[test]
fn quotas_bound_modules_pipelines_and_tasks_and_unused_modules_can_be_deleted() -> anyhow::Result<()>
{
    let broker = Broker::start(&[("in", 3), ("out", 1), ("more-in", 1), ("more-out", 1)])?;
    let dir = tempfile::tempdir()?;
    let quotas = [
        ("EDDY_QUOTAS__MAX_MODULES", "2"),
        ("EDDY_QUOTAS__MAX_PIPELINES", "1"),
        ("EDDY_QUOTAS__MAX_PIPELINE_TASKS", "2"),
    ];
    let daemon = Daemon::start(broker.bootstrap(), dir.path(), &[], &quotas)?;
    let path = |name: &str| plugin(name).to_string_lossy().into_owned();
    let push = |name: &str| daemon.eddy(&["module", "push", &path(name), "-o", "json"]);
    let digest = |out: &std::process::Output| -> anyhow::Result<String> {
        let module: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(module["digest"].as_str().unwrap_or_default().to_owned())
    };

    // Two modules fit; a third does not, and the error says what to do.
    let filter = push("filter")?;
    assert!(filter.status.success());
    daemon.deploy("up", "uppercase", "in", "out", &[])?;
    let refused = push("count")?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("quotas.max-modules"), "{stderr}");
    assert!(stderr.contains("eddy module delete"), "{stderr}");

    // One pipeline fits; a second does not.
    let second = daemon.eddy(&[
        "pipeline",
        "create",
        "more",
        "--module",
        &path("filter"),
        "--input",
        "more-in",
        "--output",
        "more-out",
    ])?;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(stderr.contains("quotas.max-pipelines"), "{stderr}");

    // Two of the pipeline's three tasks run; the third waits, saying why.
    let records: Vec<Rec> = (0..60)
        .map(|i| Rec::value(format!("r{i}")).keyed(format!("k{i}")))
        .collect();
    produce(broker.bootstrap(), "in", &records)?;
    let waiting = wait_for("a task to wait for a slot", Duration::from_secs(60), || {
        let p = daemon.pipeline("up")?;
        let waiting: Vec<v1::PartitionStatus> = p
            .partitions
            .iter()
            .filter(|s| s.last_error.contains("quotas.max-pipeline-tasks"))
            .cloned()
            .collect();
        let running = p
            .partitions
            .iter()
            .filter(|s| s.last_error.is_empty() && s.records_in > 0)
            .count();
        Ok((waiting.len() == 1 && running == 2).then_some(waiting))
    })?;
    let out = consume(
        broker.bootstrap(),
        "out",
        60,
        Duration::from_secs(10),
        Duration::from_secs(1),
    )?;
    let expected = records
        .iter()
        .filter(|r| {
            eddy_tests::java_partition(r.key.as_deref().unwrap_or_default(), 3)
                != waiting[0].partition
        })
        .count();
    assert_eq!(out.len(), expected, "the two running partitions' records");
    let info: serde_json::Value =
        serde_json::from_str(&daemon.eddy_ok(&["daemon", "info", "-o", "json"])?)?;
    let taken = &info["quotas"];
    assert_eq!(taken["tasks_running"], 2, "{info}");
    assert_eq!(taken["max_pipeline_tasks"], 2, "{info}");
    assert_eq!(taken["modules_stored"], 2, "{info}");
    assert_eq!(taken["pipelines"], 1, "{info}");

    // A module a pipeline runs cannot be deleted; an unused one can, and
    // makes room.
    // Pushing stored bytes again is no new module: it names the digest.
    let uppercase = digest(&push("uppercase")?)?;
    let refused = daemon.eddy(&["module", "delete", &uppercase])?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("pipeline(s) up"), "{stderr}");
    let deleted = daemon.eddy_ok(&["module", "delete", &digest(&filter)?])?;
    assert!(deleted.contains(&digest(&filter)?), "{deleted}");
    let listed = daemon.eddy_ok(&["module", "list", "-o", "json"])?;
    assert!(!listed.contains(&digest(&filter)?), "{listed}");
    let missing = daemon.eddy(&["module", "delete", &digest(&filter)?])?;
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not uploaded"));
    assert!(push("count")?.status.success(), "room for another module");

    // Once the pipeline is gone, its module can go too.
    daemon.eddy_ok(&["pipeline", "delete", "up"])?;
    daemon.eddy_ok(&["module", "delete", &uppercase])?;
    let listed = daemon.eddy_ok(&["module", "list", "-o", "json"])?;
    assert!(!listed.contains(&uppercase), "{listed}");
    Ok(())
}
