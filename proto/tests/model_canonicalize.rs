//! `Job::canonicalize` fills in Nomad's defaults.

mod common;

use common::*;
use proto::model::*;

#[test]
fn service_job_defaults() {
    let job = canonical_job("web-app");

    assert_eq!(job.namespace, "default");
    assert_eq!(job.region, "global");
    assert_eq!(job.name, "web-app", "the name defaults to the ID");
    assert_eq!(job.r#type, JOB_TYPE_SERVICE);
    assert_eq!(job.priority, 50);
    assert_eq!(job.datacenters, ["*"]);
    assert_eq!(job.node_pool, "default");
    assert_eq!(job.update, Some(UpdateStrategy::service_default()));

    let group = &job.task_groups[0];
    assert_eq!(group.count, 2, "an explicit count is kept");
    assert_eq!(
        group.restart_policy,
        Some(RestartPolicy {
            attempts: 2,
            interval: 30 * MINUTE,
            delay: 15 * SECOND,
            mode: "fail".into(),
            render_templates: false,
        })
    );
    assert_eq!(
        group.reschedule_policy,
        Some(ReschedulePolicy {
            attempts: 0,
            interval: 0,
            delay: 30 * SECOND,
            delay_function: "exponential".into(),
            max_delay: HOUR,
            unlimited: true,
        })
    );
    assert_eq!(
        group.update,
        Some(UpdateStrategy {
            stagger: 30 * SECOND,
            max_parallel: 1,
            health_check: "checks".into(),
            min_healthy_time: 10 * SECOND,
            healthy_deadline: 5 * MINUTE,
            progress_deadline: Some(10 * MINUTE),
            auto_revert: false,
            auto_promote: false,
            canary: 0,
        })
    );
    assert_eq!(
        group.migrate,
        Some(MigrateStrategy {
            max_parallel: 1,
            health_check: "checks".into(),
            min_healthy_time: 10 * SECOND,
            healthy_deadline: 5 * MINUTE,
        })
    );
    assert_eq!(
        group.ephemeral_disk,
        EphemeralDisk {
            size_mb: 300,
            sticky: false,
            migrate: false
        }
    );

    let task = &group.tasks[0];
    assert_eq!(task.resources.cpu, 200, "explicit resources are kept");
    assert_eq!(task.resources.memory_mb, 128);
    assert_eq!(task.kill_timeout, 5 * SECOND);
    assert_eq!(
        (task.log_config.max_files, task.log_config.max_file_size_mb),
        (10, 10)
    );
    assert_eq!(
        task.restart_policy, group.restart_policy,
        "tasks inherit the group's restart policy"
    );
    assert_eq!(job.validate(), Ok(()));
}

#[test]
fn task_resources_default_when_zero() {
    let mut job = job("j");
    job.task_groups[0].tasks[0].resources = Resources::default();
    job.canonicalize();
    let resources = &job.task_groups[0].tasks[0].resources;
    assert_eq!((resources.cpu, resources.memory_mb), (100, 300));

    // Reserved cores replace CPU: no default CPU is added.
    let mut job = common::job("j");
    job.task_groups[0].tasks[0].resources = Resources {
        cores: 2,
        ..Resources::default()
    };
    job.canonicalize();
    let resources = &job.task_groups[0].tasks[0].resources;
    assert_eq!(
        (resources.cpu, resources.cores, resources.memory_mb),
        (0, 2, 300)
    );
    assert_eq!(job.validate(), Ok(()));
}

#[test]
fn batch_job_defaults() {
    let mut job = job("nightly");
    job.r#type = JOB_TYPE_BATCH.into();
    job.canonicalize();

    assert_eq!(job.update, None, "batch jobs have no update strategy");
    let group = &job.task_groups[0];
    assert_eq!(
        group.restart_policy,
        Some(RestartPolicy {
            attempts: 3,
            interval: 24 * HOUR,
            delay: 15 * SECOND,
            mode: "fail".into(),
            render_templates: false,
        })
    );
    assert_eq!(
        group.reschedule_policy,
        Some(ReschedulePolicy {
            attempts: 1,
            interval: 24 * HOUR,
            delay: 5 * SECOND,
            delay_function: "constant".into(),
            max_delay: 0,
            unlimited: false,
        })
    );
    assert_eq!(group.update, None);
    assert_eq!(group.migrate, None, "only service jobs migrate");
    assert_eq!(job.validate(), Ok(()));
}

#[test]
fn system_and_sysbatch_defaults() {
    let mut system = job("agent");
    system.r#type = JOB_TYPE_SYSTEM.into();
    system.task_groups[0].count = 1;
    system.canonicalize();
    let group = &system.task_groups[0];
    assert_eq!(
        group.reschedule_policy, None,
        "system jobs never reschedule"
    );
    assert_eq!(
        group.restart_policy,
        RestartPolicy::default_for(JOB_TYPE_SERVICE)
    );
    assert_eq!(group.update, Some(UpdateStrategy::service_default()));
    assert_eq!(group.migrate, None);
    assert_eq!(system.validate(), Ok(()));

    let mut sysbatch = job("cleanup");
    sysbatch.r#type = JOB_TYPE_SYSBATCH.into();
    sysbatch.canonicalize();
    let group = &sysbatch.task_groups[0];
    assert_eq!(group.reschedule_policy, None);
    assert_eq!(
        group.restart_policy,
        RestartPolicy::default_for(JOB_TYPE_BATCH)
    );
    assert_eq!(group.update, None);
    assert_eq!(sysbatch.validate(), Ok(()));
}

#[test]
fn explicit_values_are_kept() {
    let mut job = job("api");
    job.name = "API server".into();
    job.namespace = "prod".into();
    job.region = "eu".into();
    job.priority = 70;
    job.datacenters = vec!["eu-west-1".into()];
    job.node_pool = "gpu".into();
    job.task_groups[0].count = 0;
    job.task_groups[0].ephemeral_disk.size_mb = 1024;
    job.task_groups[0].tasks[0].kill_timeout = 30 * SECOND;
    job.canonicalize();

    assert_eq!(job.name, "API server");
    assert_eq!(job.namespace, "prod");
    assert_eq!(job.region, "eu");
    assert_eq!(job.priority, 70);
    assert_eq!(job.datacenters, ["eu-west-1"]);
    assert_eq!(job.node_pool, "gpu");
    assert_eq!(
        job.task_groups[0].count, 0,
        "an explicit zero count is kept"
    );
    assert_eq!(job.task_groups[0].ephemeral_disk.size_mb, 1024);
    assert_eq!(job.task_groups[0].tasks[0].kill_timeout, 30 * SECOND);
}

#[test]
fn partial_policies_are_completed() {
    let mut job = job("api");
    job.update = Some(UpdateStrategy {
        max_parallel: 3,
        auto_revert: true,
        ..UpdateStrategy::default()
    });
    let group = &mut job.task_groups[0];
    group.update = Some(UpdateStrategy {
        canary: 2,
        min_healthy_time: 30 * SECOND,
        ..UpdateStrategy::default()
    });
    group.restart_policy = Some(RestartPolicy {
        attempts: 0,
        ..RestartPolicy::default()
    });
    group.reschedule_policy = Some(ReschedulePolicy {
        attempts: 5,
        interval: HOUR,
        unlimited: false,
        ..ReschedulePolicy::default()
    });
    group.tasks[0].restart_policy = Some(RestartPolicy {
        delay: 2 * SECOND,
        attempts: 1,
        ..RestartPolicy::default()
    });
    job.canonicalize();

    assert_eq!(
        job.update,
        Some(UpdateStrategy {
            max_parallel: 3,
            auto_revert: true,
            ..UpdateStrategy::service_default()
        }),
        "the job's update strategy is completed"
    );
    let group = &job.task_groups[0];
    assert_eq!(
        group.update,
        Some(UpdateStrategy {
            max_parallel: 3,
            auto_revert: true,
            canary: 2,
            min_healthy_time: 30 * SECOND,
            ..UpdateStrategy::service_default()
        }),
        "the group's update strategy is merged over the job's"
    );
    assert_eq!(
        group.restart_policy,
        Some(RestartPolicy {
            attempts: 0,
            interval: 30 * MINUTE,
            delay: 15 * SECOND,
            mode: "fail".into(),
            render_templates: false,
        }),
        "zero attempts is a choice and is kept"
    );
    assert_eq!(
        group.reschedule_policy,
        Some(ReschedulePolicy {
            attempts: 5,
            interval: HOUR,
            delay: 30 * SECOND,
            delay_function: "exponential".into(),
            max_delay: HOUR,
            unlimited: false,
        })
    );
    assert_eq!(
        group.tasks[0].restart_policy,
        Some(RestartPolicy {
            attempts: 1,
            interval: 30 * MINUTE,
            delay: 2 * SECOND,
            mode: "fail".into(),
            render_templates: false,
        }),
        "the task's restart policy is merged over the group's"
    );
    assert_eq!(job.validate(), Ok(()));
}

#[test]
fn placement_and_network_defaults() {
    let mut job = job("api");
    job.constraints = vec![Constraint {
        l_target: "${attr.kernel.name}".into(),
        r_target: "linux".into(),
        operand: String::new(),
    }];
    let group = &mut job.task_groups[0];
    group.affinities = vec![Affinity {
        l_target: "${node.class}".into(),
        r_target: "large".into(),
        ..Affinity::default()
    }];
    group.spreads = vec![Spread {
        attribute: "${node.datacenter}".into(),
        ..Spread::default()
    }];
    group.networks = vec![NetworkResource {
        dynamic_ports: vec![Port {
            label: "http".into(),
            to: 8080,
            ..Port::default()
        }],
        reserved_ports: vec![Port {
            label: "admin".into(),
            value: 9000,
            host_network: "internal".into(),
            ..Port::default()
        }],
        ..NetworkResource::default()
    }];
    job.canonicalize();

    assert_eq!(job.constraints[0].operand, "=");
    let group = &job.task_groups[0];
    assert_eq!(
        (
            group.affinities[0].operand.as_str(),
            group.affinities[0].weight
        ),
        ("=", 50)
    );
    assert_eq!(group.spreads[0].weight, 50);
    let network = &group.networks[0];
    assert_eq!(network.mode, "host");
    assert_eq!(network.dynamic_ports[0].host_network, "default");
    assert_eq!(network.reserved_ports[0].host_network, "internal");
    assert_eq!(job.validate(), Ok(()));
}

#[test]
fn empty_lifecycle_is_dropped() {
    let mut job = job("api");
    job.task_groups[0].tasks[0].lifecycle = Some(TaskLifecycle::default());
    job.task_groups[0].tasks.push(Task {
        lifecycle: Some(TaskLifecycle {
            hook: LIFECYCLE_HOOK_PRESTART.into(),
            sidecar: false,
        }),
        ..task("init")
    });
    job.canonicalize();
    assert_eq!(job.task_groups[0].tasks[0].lifecycle, None);
    assert!(job.task_groups[0].tasks[1].lifecycle.is_some());
}

#[test]
fn canonicalizing_nomad_output_is_stable() {
    // A job Nomad returns is already canonical, except for the job-level
    // update strategy Nomad stores abridged and the empty network mode.
    let original: Job = parse(JOB_JSON);
    let mut job = original.clone();
    job.canonicalize();
    assert_eq!(
        job.update.as_ref().map(|update| update.healthy_deadline),
        Some(5 * MINUTE)
    );
    assert_eq!(job.task_groups[0].networks[0].mode, "host");
    assert_eq!(job.task_groups[0], {
        let mut group = original.task_groups[0].clone();
        group.networks[0].mode = "host".into();
        group
    });

    let once = job.clone();
    job.canonicalize();
    assert_eq!(job, once, "canonicalize is idempotent");
    assert_eq!(job.validate(), Ok(()));
}

#[test]
fn spec_changed_ignores_server_managed_fields() {
    let job = canonical_job("api");
    assert!(!job.spec_changed(&job.clone()));

    let mut stored = job.clone();
    stored.version = 4;
    stored.status = JOB_STATUS_RUNNING.into();
    stored.status_description = "running".into();
    stored.stable = true;
    stored.submit_time = 1_700_000_000_000_000_000;
    stored.create_index = 10;
    stored.modify_index = 20;
    stored.job_modify_index = 15;
    assert!(!job.spec_changed(&stored));
    assert!(!stored.spec_changed(&job));

    let mut stopped = stored.clone();
    stopped.stop = true;
    assert!(stored.spec_changed(&stopped), "Stop is part of the spec");

    let mut scaled = stored.clone();
    scaled.task_groups[0].count = 5;
    assert!(stored.spec_changed(&scaled));

    let mut retagged = stored.clone();
    retagged.task_groups[0].tasks[0]
        .config
        .insert("command".into(), "/bin/true".into());
    assert!(stored.spec_changed(&retagged));

    let mut remeta = stored.clone();
    remeta.meta.insert("team".into(), "other".into());
    assert!(stored.spec_changed(&remeta));
}

#[test]
fn an_explicit_zero_progress_deadline_is_kept() {
    // Nomad: `progress_deadline = 0` makes the first unhealthy allocation
    // fail the deployment; only an unset deadline gets the 10 minutes.
    let parse = |update: serde_json::Value, group_update: serde_json::Value| {
        let mut job: Job = serde_json::from_value(serde_json::json!({
            "ID": "web", "Update": update,
            "TaskGroups": [{ "Name": "g", "Update": group_update,
                "Tasks": [{ "Name": "t", "Driver": "mock_driver" }] }]
        }))
        .expect("job");
        job.canonicalize();
        job.task_groups[0]
            .update
            .as_ref()
            .and_then(|u| u.progress_deadline)
    };
    let zero = serde_json::json!({ "ProgressDeadline": 0 });
    let unset = serde_json::json!({ "MaxParallel": 2 });
    let null = serde_json::json!({ "ProgressDeadline": null });
    assert_eq!(parse(unset.clone(), unset.clone()), Some(10 * MINUTE));
    assert_eq!(parse(unset.clone(), null), Some(10 * MINUTE));
    assert_eq!(parse(unset.clone(), zero.clone()), Some(0));
    // The group inherits the job's explicit 0.
    assert_eq!(parse(zero, unset), Some(0));
}
