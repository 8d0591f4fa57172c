//! Properties of the model over generated jobs.

mod common;

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proto::model::*;
use serde_json::{Map, Value};

/// Small identifiers, sometimes empty.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z][a-z0-9-]{0,6}"]
}

/// Durations in nanoseconds: often zero (unset), sometimes negative.
fn duration() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0),
        (1i64..=3_600).prop_map(|seconds| seconds * SECOND),
        -5i64..0,
    ]
}

fn small() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0), -2i64..8]
}

fn string_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map("[a-z_.]{1,6}", "[ -~]{0,8}", 0..3)
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[ -~]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(Value::from),
            btree_map("[a-z]{1,5}", inner, 0..3)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn job_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(JOB_TYPE_SERVICE.to_owned()),
        Just(JOB_TYPE_BATCH.to_owned()),
        Just(JOB_TYPE_SYSTEM.to_owned()),
        Just(JOB_TYPE_SYSBATCH.to_owned()),
        Just("unknown".to_owned()),
    ]
}

fn operand() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        proptest::sample::select(CONSTRAINT_OPERANDS.to_vec()).prop_map(str::to_owned),
        Just("~".to_owned()),
    ]
}

fn constraint() -> impl Strategy<Value = Constraint> {
    (name(), name(), operand()).prop_map(|(l_target, r_target, operand)| Constraint {
        l_target,
        r_target,
        operand,
    })
}

fn affinity() -> impl Strategy<Value = Affinity> {
    (name(), name(), operand(), -120i32..120).prop_map(|(l_target, r_target, operand, weight)| {
        Affinity {
            l_target,
            r_target,
            operand,
            weight,
        }
    })
}

fn spread() -> impl Strategy<Value = Spread> {
    (name(), -5i32..110, vec((name(), 0u32..80), 0..3)).prop_map(|(attribute, weight, targets)| {
        Spread {
            attribute,
            weight,
            spread_target: targets
                .into_iter()
                .map(|(value, percent)| SpreadTarget { value, percent })
                .collect(),
        }
    })
}

fn restart_policy() -> impl Strategy<Value = RestartPolicy> {
    (
        small(),
        duration(),
        duration(),
        prop_oneof![Just(""), Just("fail"), Just("delay"), Just("x")],
    )
        .prop_map(|(attempts, interval, delay, mode)| RestartPolicy {
            attempts,
            interval,
            delay,
            mode: mode.to_owned(),
            render_templates: false,
        })
}

fn reschedule_policy() -> impl Strategy<Value = ReschedulePolicy> {
    (
        small(),
        duration(),
        duration(),
        prop_oneof![
            Just(""),
            Just("constant"),
            Just("exponential"),
            Just("fibonacci")
        ],
        duration(),
        any::<bool>(),
    )
        .prop_map(
            |(attempts, interval, delay, function, max_delay, unlimited)| ReschedulePolicy {
                attempts,
                interval,
                delay,
                delay_function: function.to_owned(),
                max_delay,
                unlimited,
            },
        )
}

fn update_strategy() -> impl Strategy<Value = UpdateStrategy> {
    (
        duration(),
        small(),
        prop_oneof![
            Just(""),
            Just("checks"),
            Just("task_states"),
            Just("manual")
        ],
        (duration(), duration(), duration()),
        (any::<bool>(), any::<bool>(), small()),
    )
        .prop_map(
            |(stagger, max_parallel, health_check, deadlines, flags)| UpdateStrategy {
                stagger,
                max_parallel,
                health_check: health_check.to_owned(),
                min_healthy_time: deadlines.0,
                healthy_deadline: deadlines.1,
                progress_deadline: Some(deadlines.2),
                auto_revert: flags.0,
                auto_promote: flags.1,
                canary: flags.2,
            },
        )
}

fn port() -> impl Strategy<Value = Port> {
    (
        name(),
        0i64..70_000,
        -1i64..9_000,
        prop_oneof![Just(""), Just("default"), Just("lan")],
    )
        .prop_map(|(label, value, to, host_network)| Port {
            label,
            value,
            to,
            host_network: host_network.to_owned(),
        })
}

fn network() -> impl Strategy<Value = NetworkResource> {
    (
        prop_oneof![Just(""), Just("host"), Just("bridge")],
        vec(port(), 0..2),
        vec(port(), 0..2),
    )
        .prop_map(|(mode, reserved_ports, dynamic_ports)| NetworkResource {
            mode: mode.to_owned(),
            reserved_ports,
            dynamic_ports,
            ..NetworkResource::default()
        })
}

fn task() -> impl Strategy<Value = Task> {
    (
        (
            name(),
            prop_oneof![Just(""), Just("raw_exec"), Just("docker")],
        ),
        btree_map("[a-z]{1,6}", json_value(), 0..3),
        string_map(),
        (0i64..500, 0i64..3, 0i64..400, 0i64..600),
        (duration(), small(), small()),
        option::of(restart_policy()),
        option::of(prop_oneof![Just(""), Just("prestart"), Just("poststop")]),
        (
            vec(constraint(), 0..2),
            vec(affinity(), 0..2),
            vec(network(), 0..2),
        ),
        any::<bool>(),
    )
        .prop_map(
            |(
                (name, driver),
                config,
                env,
                (cpu, cores, memory_mb, memory_max_mb),
                (kill_timeout, max_files, max_file_size_mb),
                restart_policy,
                hook,
                (constraints, affinities, networks),
                leader,
            )| Task {
                name,
                driver: driver.to_owned(),
                config: config.into_iter().collect::<Map<String, Value>>(),
                env,
                resources: Resources {
                    cpu,
                    cores,
                    memory_mb,
                    memory_max_mb,
                    networks,
                    ..Resources::default()
                },
                kill_timeout,
                log_config: LogConfig {
                    max_files,
                    max_file_size_mb,
                    disabled: false,
                },
                restart_policy,
                lifecycle: hook.map(|hook| TaskLifecycle {
                    hook: hook.to_owned(),
                    sidecar: false,
                }),
                constraints,
                affinities,
                leader,
                ..Task::default()
            },
        )
}

fn task_group() -> impl Strategy<Value = TaskGroup> {
    (
        (name(), -1i64..4),
        vec(task(), 0..3),
        (
            option::of(restart_policy()),
            option::of(reschedule_policy()),
            option::of(update_strategy()),
        ),
        (0i64..400, option::of(duration())),
        (
            vec(constraint(), 0..2),
            vec(affinity(), 0..2),
            vec(spread(), 0..2),
        ),
        vec(network(), 0..2),
        string_map(),
    )
        .prop_map(
            |(
                (name, count),
                tasks,
                (restart_policy, reschedule_policy, update),
                (disk, shutdown_delay),
                (constraints, affinities, spreads),
                networks,
                meta,
            )| TaskGroup {
                name,
                count,
                tasks,
                restart_policy,
                reschedule_policy,
                update,
                ephemeral_disk: EphemeralDisk {
                    size_mb: disk,
                    ..EphemeralDisk::default()
                },
                shutdown_delay,
                constraints,
                affinities,
                spreads,
                networks,
                meta,
                ..TaskGroup::default()
            },
        )
}

fn multiregion() -> impl Strategy<Value = Multiregion> {
    (
        0i64..3,
        prop_oneof![Just(""), Just("fail_all"), Just("x")],
        vec((name(), 0i64..3, vec(name(), 0..2)), 0..3),
    )
        .prop_map(|(max_parallel, on_failure, regions)| Multiregion {
            strategy: MultiregionStrategy {
                max_parallel,
                on_failure: on_failure.to_owned(),
            },
            regions: regions
                .into_iter()
                .map(|(name, count, datacenters)| MultiregionRegion {
                    name,
                    count,
                    datacenters,
                    ..MultiregionRegion::default()
                })
                .collect(),
        })
}

/// Jobs as users might submit them: partial, sometimes invalid.
fn job() -> impl Strategy<Value = Job> {
    (
        (name(), name(), name(), name(), job_type(), 0i64..120),
        vec(name(), 0..3),
        vec(task_group(), 0..3),
        (
            vec(constraint(), 0..2),
            vec(affinity(), 0..2),
            vec(spread(), 0..2),
        ),
        option::of(update_strategy()),
        option::of(multiregion()),
        option::of(Just(proto::model::PeriodicConfig {
            enabled: true,
            spec: "@daily".into(),
            ..Default::default()
        })),
        string_map(),
        (any::<bool>(), 0u64..5, 0i64..i64::MAX, 0u64..100),
    )
        .prop_map(
            |(
                (id, name, namespace, region, r#type, priority),
                datacenters,
                task_groups,
                (constraints, affinities, spreads),
                update,
                multiregion,
                periodic,
                meta,
                (stop, version, submit_time, index),
            )| Job {
                id,
                name,
                namespace,
                region,
                r#type,
                priority,
                datacenters,
                task_groups,
                constraints,
                affinities,
                spreads,
                update,
                multiregion,
                periodic,
                meta,
                stop,
                version,
                submit_time,
                create_index: index,
                modify_index: index + 1,
                job_modify_index: index,
                ..Job::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn canonicalize_is_idempotent(mut job in job()) {
        job.canonicalize();
        let once = job.clone();
        job.canonicalize();
        prop_assert_eq!(job, once);
    }

    #[test]
    fn json_round_trip_is_identity(job in job()) {
        let text = serde_json::to_string(&job).expect("serialize");
        let back: Job = serde_json::from_str(&text).expect("deserialize");
        prop_assert_eq!(&back, &job);

        let mut canonical = job;
        canonical.canonicalize();
        let value = serde_json::to_value(&canonical).expect("serialize");
        let back: Job = serde_json::from_value(value).expect("deserialize");
        prop_assert_eq!(back, canonical);
    }

    #[test]
    fn canonicalize_fills_what_validation_requires(mut job in job()) {
        job.canonicalize();
        let known_type = JOB_TYPES.contains(&job.r#type.as_str());
        if let Err(errors) = job.validate() {
            for error in &errors {
                let filled = ["Region", "Namespace", "Type", "Priority", "Datacenters"];
                prop_assert!(
                    !(filled.contains(&error.path.as_str()) && error.message == "required"),
                    "{}", error
                );
                prop_assert!(
                    !error.path.ends_with("RestartPolicy") || !known_type,
                    "{}", error
                );
                prop_assert!(!error.path.is_empty());
            }
            // The display lists every error.
            let text = errors.to_string();
            let expected_header = if errors.len() == 1 {
                "1 error occurred:".to_owned()
            } else {
                format!("{} errors occurred:", errors.len())
            };
            prop_assert!(text.starts_with(&expected_header));
            prop_assert_eq!(text.matches("\n\t* ").count(), errors.len());
        }
    }

    #[test]
    fn spec_changed_only_sees_the_spec(job in job(), version in 0u64..9, index in 0u64..999) {
        prop_assert!(!job.spec_changed(&job));
        let mut stored = job.clone();
        stored.version = version;
        stored.modify_index = index;
        stored.job_modify_index = index;
        stored.create_index = index;
        stored.status = JOB_STATUS_DEAD.to_owned();
        stored.stable = !job.stable;
        prop_assert!(!job.spec_changed(&stored));

        let mut changed = stored.clone();
        changed.priority += 1;
        prop_assert!(stored.spec_changed(&changed));
    }

    #[test]
    fn stub_mirrors_the_job(job in job()) {
        let stub = job.stub(None);
        prop_assert_eq!(&stub.id, &job.id);
        prop_assert_eq!(&stub.datacenters, &job.datacenters);
        prop_assert_eq!(stub.periodic, job.periodic.is_some());
        prop_assert_eq!(stub.version, job.version);
        prop_assert_eq!(stub.job_modify_index, job.job_modify_index);
    }
}
