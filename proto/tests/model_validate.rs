//! `Job::validate` reports every problem at once, with field paths.

mod common;

use common::*;
use proto::model::*;

/// The `path: message` lines of a validation result.
fn problems(job: &Job) -> Vec<String> {
    match job.validate() {
        Ok(()) => Vec::new(),
        Err(errors) => errors.messages(),
    }
}

/// Asserts that `job` fails validation with exactly `expected`.
#[track_caller]
fn assert_problems(job: &Job, expected: &[&str]) {
    assert_eq!(problems(job), expected);
}

#[test]
fn empty_job_lists_every_missing_field() {
    let errors = Job::default().validate().expect_err("invalid");
    assert_eq!(
        errors.messages(),
        [
            "Region: required",
            "Namespace: required",
            "ID: required",
            "Name: required",
            "Type: required",
            "Priority: must be between 1 and 100",
            "Datacenters: required",
            "TaskGroups: required",
        ]
    );
    assert_eq!(errors.len(), 8);
    assert_eq!(errors.errors[2], FieldError::new("ID", "required"));
    assert_eq!(
        errors.to_string(),
        "8 errors occurred:\n\
         \t* Region: required\n\
         \t* Namespace: required\n\
         \t* ID: required\n\
         \t* Name: required\n\
         \t* Type: required\n\
         \t* Priority: must be between 1 and 100\n\
         \t* Datacenters: required\n\
         \t* TaskGroups: required\n\n"
    );
}

#[test]
fn canonicalize_supplies_what_validation_requires() {
    let mut job = Job {
        id: "x".into(),
        ..Job::default()
    };
    job.canonicalize();
    assert_problems(&job, &["TaskGroups: required"]);
    let error = job.validate().expect_err("invalid");
    assert_eq!(
        error.to_string(),
        "1 error occurred:\n\t* TaskGroups: required\n\n"
    );
}

#[test]
fn many_problems_are_reported_together() {
    let mut job = canonical_job("my job");
    job.r#type = "daemon".into();
    job.priority = 101;
    let mut second = job.task_groups[0].clone();
    second.count = -1;
    second.tasks.push(second.tasks[0].clone());
    second.tasks[1].driver.clear();
    second.tasks.push(Task {
        name: String::new(),
        ..second.tasks[0].clone()
    });
    second.tasks[0].resources.cpu = 0;
    second.tasks[0].resources.memory_mb = 5;
    job.task_groups.push(second);
    let mut third = job.task_groups[0].clone();
    third.name = "empty".into();
    third.tasks.clear();
    job.task_groups.push(third);

    assert_problems(
        &job,
        &[
            "ID: contains a space",
            "Type: unknown job type \"daemon\"",
            "Priority: must be between 1 and 100",
            "TaskGroups[1].Name: duplicate group name \"web\"",
            "TaskGroups[1].Count: must be non-negative",
            "TaskGroups[1].Tasks[0].Resources.CPU: must be at least 1",
            "TaskGroups[1].Tasks[0].Resources.MemoryMB: must be at least 10",
            "TaskGroups[1].Tasks[1].Name: duplicate task name \"main\"",
            "TaskGroups[1].Tasks[1].Driver: required",
            "TaskGroups[1].Tasks[2].Name: required",
            "TaskGroups[2].Tasks: required",
        ],
    );
    let errors = job.validate().expect_err("invalid");
    assert!(errors
        .to_string()
        .starts_with("11 errors occurred:\n\t* ID: contains a space\n\t* Type: unknown"));
}

#[test]
fn job_identity() {
    let mut job = canonical_job("a\0b");
    job.datacenters = vec!["dc1".into(), String::new()];
    assert_problems(
        &job,
        &[
            "ID: contains a null character",
            "Name: contains a null character",
            "Datacenters[1]: must not be empty",
        ],
    );
}

#[test]
fn constraint_rules() {
    let mut job = canonical_job("api");
    let constraint = |l: &str, op: &str, r: &str| Constraint {
        l_target: l.into(),
        r_target: r.into(),
        operand: op.into(),
    };
    job.constraints = vec![
        constraint("${attr.kernel.name}", "~", "linux"),
        constraint("${attr.os.name}", "regexp", "[ub"),
        constraint("${attr.os.name}", "regexp", "^(ubuntu|debian)$"),
        constraint("", "=", "x"),
        constraint("${meta.rack}", "!=", ""),
        constraint("", "distinct_hosts", "true"),
        constraint("${meta.rack}", "distinct_property", "zero"),
        constraint("${meta.gpu}", "is_set", "yes"),
        constraint("${meta.tags}", "set_contains_any", "a,b"),
    ];
    job.task_groups[0].tasks[0].constraints = vec![constraint("", "distinct_hosts", "")];

    let problems = problems(&job);
    assert_eq!(problems.len(), 7, "{problems:#?}");
    assert_eq!(
        problems[0],
        "Constraints[0].Operand: unknown constraint operand \"~\""
    );
    assert!(
        problems[1].starts_with("Constraints[1].RTarget: invalid regular expression \"[ub\": "),
        "{}",
        problems[1]
    );
    assert_eq!(
        &problems[2..],
        [
            "Constraints[3].LTarget: required",
            "Constraints[4].RTarget: required",
            "Constraints[6].RTarget: must be a positive integer",
            "Constraints[7].RTarget: must be empty for operand \"is_set\"",
            "TaskGroups[0].Tasks[0].Constraints[0].Operand: \"distinct_hosts\" is not allowed on a task",
        ]
    );
}

#[test]
fn every_documented_operand_is_accepted() {
    for operand in CONSTRAINT_OPERANDS {
        let mut job = canonical_job("api");
        job.constraints = vec![Constraint {
            l_target: "${meta.x}".into(),
            r_target: match operand {
                "is_set" | "is_not_set" => String::new(),
                "distinct_property" => "2".into(),
                _ => "1".into(),
            },
            operand: operand.into(),
        }];
        assert_eq!(job.validate(), Ok(()), "operand {operand}");
    }
}

#[test]
fn affinity_rules() {
    let mut job = canonical_job("api");
    let affinity = |weight: i32, op: &str| Affinity {
        l_target: "${node.class}".into(),
        r_target: "large".into(),
        operand: op.into(),
        weight,
    };
    job.task_groups[0].affinities = vec![
        affinity(0, "="),
        affinity(101, "="),
        affinity(-100, "="),
        affinity(100, "distinct_hosts"),
        affinity(-5, "regexp"),
    ];
    job.task_groups[0].affinities[4].r_target = "(".into();
    let problems = problems(&job);
    assert_eq!(
        &problems[..3],
        [
            "TaskGroups[0].Affinities[0].Weight: must be a non-zero value between -100 and 100",
            "TaskGroups[0].Affinities[1].Weight: must be a non-zero value between -100 and 100",
            "TaskGroups[0].Affinities[3].Operand: unknown affinity operand \"distinct_hosts\"",
        ]
    );
    assert!(
        problems[3].starts_with("TaskGroups[0].Affinities[4].RTarget: invalid regular expression")
    );
    assert_eq!(problems.len(), 4);
}

#[test]
fn spread_rules() {
    let mut job = canonical_job("api");
    let target = |value: &str, percent| SpreadTarget {
        value: value.into(),
        percent,
    };
    job.task_groups[0].spreads = vec![
        Spread {
            attribute: "${node.datacenter}".into(),
            weight: 50,
            spread_target: vec![target("dc1", 70), target("dc2", 50)],
        },
        Spread {
            attribute: String::new(),
            weight: 101,
            spread_target: vec![target("a", 10), target("a", 10)],
        },
        Spread {
            attribute: "${meta.rack}".into(),
            weight: 100,
            spread_target: vec![target("r1", 60), target("r2", 40)],
        },
    ];
    assert_problems(
        &job,
        &[
            "TaskGroups[0].Spreads[0].SpreadTarget: sum of percentages (120) must not exceed 100",
            "TaskGroups[0].Spreads[1].Attribute: required",
            "TaskGroups[0].Spreads[1].Weight: must be between 1 and 100",
            "TaskGroups[0].Spreads[1].SpreadTarget[1].Value: duplicate value \"a\"",
        ],
    );
}

#[test]
fn restart_policy_rules() {
    let mut job = canonical_job("api");
    let policy = job.task_groups[0].restart_policy.as_mut().expect("policy");
    policy.mode = "sometimes".into();
    policy.attempts = 10;
    policy.delay = 5 * MINUTE;
    let task_policy = job.task_groups[0].tasks[0]
        .restart_policy
        .as_mut()
        .expect("task policy");
    task_policy.interval = SECOND;
    task_policy.attempts = 0;
    task_policy.mode = RESTART_MODE_DELAY.into();
    assert_problems(
        &job,
        &[
            "TaskGroups[0].RestartPolicy.Mode: must be \"fail\" or \"delay\", got \"sometimes\"",
            "TaskGroups[0].RestartPolicy.Interval: 30m0s is too short for 10 attempts with a delay of 5m0s",
            "TaskGroups[0].Tasks[0].RestartPolicy.Attempts: must be at least 1 when Mode is \"delay\"",
            "TaskGroups[0].Tasks[0].RestartPolicy.Interval: must be at least 5s",
        ],
    );
}

#[test]
fn reschedule_policy_rules() {
    let mut job = canonical_job("api");
    job.task_groups[0].reschedule_policy = Some(ReschedulePolicy {
        attempts: 3,
        interval: 10 * SECOND,
        delay: SECOND,
        delay_function: "linear".into(),
        max_delay: 0,
        unlimited: true,
    });
    assert_problems(
        &job,
        &[
            "TaskGroups[0].ReschedulePolicy.Attempts: must be 0 when Unlimited is set",
            "TaskGroups[0].ReschedulePolicy.DelayFunction: unknown delay function \"linear\" (must be \"constant\", \"exponential\" or \"fibonacci\")",
            "TaskGroups[0].ReschedulePolicy.Delay: must be at least 5s",
        ],
    );

    // A policy that disables rescheduling is valid whatever its delays.
    job.task_groups[0].reschedule_policy = Some(ReschedulePolicy::default());
    assert_eq!(job.validate(), Ok(()));
}

#[test]
fn update_strategy_rules() {
    let mut job = canonical_job("api");
    job.task_groups[0].update = Some(UpdateStrategy {
        health_check: "http".into(),
        max_parallel: -1,
        auto_promote: true,
        min_healthy_time: 10 * MINUTE,
        healthy_deadline: 5 * MINUTE,
        progress_deadline: Some(4 * MINUTE),
        stagger: 0,
        ..UpdateStrategy::default()
    });
    assert_problems(
        &job,
        &[
            "TaskGroups[0].Update.HealthCheck: unknown health check \"http\" (must be \"checks\", \"task_states\" or \"manual\")",
            "TaskGroups[0].Update.MaxParallel: must be non-negative",
            "TaskGroups[0].Update.AutoPromote: requires Canary to be at least 1",
            "TaskGroups[0].Update.MinHealthyTime: must be less than HealthyDeadline",
            "TaskGroups[0].Update.HealthyDeadline: must be less than ProgressDeadline",
            "TaskGroups[0].Update.Stagger: must be positive",
        ],
    );
}

#[test]
fn job_type_rules() {
    let mut system = job("agent");
    system.r#type = JOB_TYPE_SYSTEM.into();
    system.canonicalize();
    system.task_groups[0].count = 2;
    system.task_groups[0].spreads = vec![Spread {
        attribute: "${node.datacenter}".into(),
        weight: 50,
        ..Spread::default()
    }];
    system.task_groups[0].reschedule_policy = ReschedulePolicy::default_for(JOB_TYPE_SERVICE);
    assert_problems(
        &system,
        &[
            "TaskGroups[0].Count: must not be greater than 1 for system jobs",
            "TaskGroups[0].Spreads: not allowed for system jobs",
            "TaskGroups[0].ReschedulePolicy: not allowed for system jobs",
        ],
    );

    let mut batch = job("nightly");
    batch.r#type = JOB_TYPE_BATCH.into();
    batch.canonicalize();
    batch.task_groups[0].update = Some(UpdateStrategy::service_default());
    batch.task_groups[0].migrate = Some(MigrateStrategy::service_default());
    assert_problems(
        &batch,
        &[
            "TaskGroups[0].Update: not allowed for batch jobs",
            "TaskGroups[0].Migrate: not allowed for batch jobs",
        ],
    );

    let mut periodic = canonical_job("report");
    periodic.periodic = Some(
        serde_json::from_value(serde_json::json!({"Enabled": true, "Spec": "@daily"}))
            .expect("periodic"),
    );
    assert_problems(
        &periodic,
        &["Periodic: only allowed for batch and sysbatch jobs"],
    );
    periodic.r#type = JOB_TYPE_BATCH.into();
    periodic.task_groups[0].update = None;
    periodic.task_groups[0].migrate = None;
    assert_eq!(periodic.validate(), Ok(()));

    let mut bad = periodic.clone();
    if let Some(p) = bad.periodic.as_mut() {
        p.spec = "61 * * * *".into();
        p.time_zone = "Nowhere/Atlantis".into();
    }
    let errors = bad.validate().expect_err("bad spec");
    let paths: Vec<&str> = errors.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["Periodic.TimeZone"]);
    if let Some(p) = bad.periodic.as_mut() {
        p.time_zone = "Europe/Paris".into();
    }
    let errors = bad.validate().expect_err("bad spec");
    let paths: Vec<&str> = errors.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["Periodic.Spec"]);

    let mut parameterized = periodic.clone();
    parameterized.periodic = None;
    parameterized.parameterized_job = Some(
        serde_json::from_value(serde_json::json!({
            "Payload": "sometimes", "MetaRequired": ["a"], "MetaOptional": ["a", "b"]
        }))
        .expect("parameterized"),
    );
    let errors = parameterized.validate().expect_err("bad parameterized");
    let paths: Vec<&str> = errors.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "ParameterizedJob.Payload",
            "ParameterizedJob.MetaOptional[0]"
        ]
    );
}

#[test]
fn group_and_task_rules() {
    let mut job = canonical_job("api");
    let group = &mut job.task_groups[0];
    group.ephemeral_disk.size_mb = 50;
    group.max_client_disconnect = Some(-SECOND);
    group.stop_after_client_disconnect = Some(MINUTE);
    group.tasks.push(Task {
        leader: true,
        ..group.tasks[0].clone()
    });
    group.tasks[0].leader = true;
    group.tasks[1].name = "a/b".into();
    group.tasks[1].kill_timeout = 20 * MINUTE;
    group.tasks[1].lifecycle = Some(TaskLifecycle {
        hook: "prestop".into(),
        sidecar: false,
    });
    group.tasks[0].resources.memory_max_mb = 64;
    group.tasks[0].resources.disk_mb = 100;
    group.tasks[0].log_config.max_files = 0;
    assert_problems(
        &job,
        &[
            "TaskGroups[0].MaxClientDisconnect: must be non-negative",
            "TaskGroups[0].MaxClientDisconnect: cannot be set together with StopAfterClientDisconnect",
            "TaskGroups[0].Tasks: only one task may be marked as leader",
            "TaskGroups[0].Tasks[0].Resources.MemoryMaxMB: must not be less than MemoryMB (128)",
            "TaskGroups[0].Tasks[0].Resources.DiskMB: not allowed on a task, set the group's EphemeralDisk",
            "TaskGroups[0].Tasks[0].LogConfig.MaxFiles: must be at least 1",
            "TaskGroups[0].Tasks[1].Name: contains a slash",
            "TaskGroups[0].Tasks[1].KillTimeout: must not be longer than the group's ProgressDeadline (10m0s)",
            "TaskGroups[0].Tasks[1].LogConfig: log storage (100 MB) must be less than the group's ephemeral disk (50 MB)",
            "TaskGroups[0].Tasks[1].Lifecycle.Hook: unknown lifecycle hook \"prestop\"",
        ],
    );

    job.task_groups[0].ephemeral_disk.size_mb = 5;
    assert_eq!(
        problems(&job)[0],
        "TaskGroups[0].EphemeralDisk.SizeMB: must be at least 10"
    );
}

#[test]
fn a_group_needs_a_main_task() {
    let mut job = canonical_job("api");
    job.task_groups[0].tasks[0].lifecycle = Some(TaskLifecycle {
        hook: LIFECYCLE_HOOK_PRESTART.into(),
        sidecar: true,
    });
    assert_problems(
        &job,
        &["TaskGroups[0].Tasks: at least one task must have no lifecycle hook"],
    );
}

#[test]
fn network_rules() {
    let mut job = canonical_job("api");
    let port = |label: &str, value, to| Port {
        label: label.into(),
        value,
        to,
        host_network: String::new(),
    };
    job.task_groups[0].networks = vec![NetworkResource {
        mode: "overlay".into(),
        reserved_ports: vec![
            port("http", 8080, 0),
            port("admin", 8080, 0),
            port("big", 70000, 0),
        ],
        dynamic_ports: vec![port("http", 0, -2), port("", 0, 0)],
        ..NetworkResource::default()
    }];
    job.task_groups[0].tasks[0].resources.networks = vec![NetworkResource {
        dynamic_ports: vec![port("admin", 0, 0)],
        ..NetworkResource::default()
    }];
    assert_problems(
        &job,
        &[
            "TaskGroups[0].Networks[0].Mode: unknown network mode \"overlay\" (must be \"host\", \"bridge\", \"none\" or \"cni/<name>\")",
            "TaskGroups[0].Networks[0].ReservedPorts[1].Value: static port 8080 is already reserved",
            "TaskGroups[0].Networks[0].ReservedPorts[2].Value: must be between 0 and 65535",
            "TaskGroups[0].Networks[0].DynamicPorts[0].Label: duplicate port label \"http\"",
            "TaskGroups[0].Networks[0].DynamicPorts[0].To: must be between -1 and 65535",
            "TaskGroups[0].Networks[0].DynamicPorts[1].Label: required",
            "TaskGroups[0].Tasks[0].Resources.Networks[0].DynamicPorts[0].Label: duplicate port label \"admin\"",
        ],
    );
}

#[test]
fn multiregion_rules() {
    let mut job = canonical_job("global-api");
    let region = |name: &str| MultiregionRegion {
        name: name.into(),
        count: 1,
        datacenters: vec!["dc1".into()],
        ..MultiregionRegion::default()
    };
    job.multiregion = Some(Multiregion {
        strategy: MultiregionStrategy {
            max_parallel: 1,
            on_failure: "fail_everything".into(),
        },
        regions: vec![region("eu"), region(""), region("eu"), region("us")],
    });
    assert_problems(
        &job,
        &[
            "Multiregion.Strategy.OnFailure: unknown value \"fail_everything\" (must be \"\", \"fail_all\" or \"fail_local\")",
            "Multiregion.Regions[1].Name: required",
            "Multiregion.Regions[2].Name: duplicate region name \"eu\"",
        ],
    );

    let multiregion = job.multiregion.as_ref().expect("multiregion");
    let errors = multiregion.validate().expect_err("invalid");
    assert_eq!(errors.errors[0].path, "Strategy.OnFailure");

    for on_failure in ["", "fail_all", "fail_local"] {
        let valid = Multiregion {
            strategy: MultiregionStrategy {
                max_parallel: 0,
                on_failure: on_failure.into(),
            },
            regions: vec![region("eu"), region("us")],
        };
        assert_eq!(valid.validate(), Ok(()));
    }
    assert_eq!(
        Multiregion::default()
            .validate()
            .expect_err("no regions")
            .messages(),
        ["Regions: required"]
    );
}

#[test]
fn validate_response_carries_the_errors() {
    let mut job = canonical_job("api");
    job.task_groups[0].tasks[0].driver.clear();
    let result = job.validate();
    let response = JobValidateResponse::from_result(&result);
    assert_eq!(
        response.validation_errors,
        ["TaskGroups[0].Tasks[0].Driver: required"]
    );
    assert_eq!(
        response.error,
        "1 error occurred:\n\t* TaskGroups[0].Tasks[0].Driver: required\n\n"
    );
    assert_eq!(
        JobValidateResponse::from_result(&Ok(())),
        JobValidateResponse::default()
    );
}

#[test]
fn validation_errors_collect_and_iterate() {
    let mut errors = ValidationErrors::new();
    assert!(errors.is_empty());
    assert_eq!(errors.clone().into_result(), Ok(()));
    errors.push("A", "bad");
    errors.push("B.C", "worse");
    assert_eq!(
        errors.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
        ["A", "B.C"]
    );
    assert_eq!(errors.errors[1].to_string(), "B.C: worse");
    let json = serde_json::to_value(&errors).expect("serialize");
    assert_eq!(json["errors"][0]["path"], "A");
    assert_eq!(errors.clone().into_result(), Err(errors));
}
