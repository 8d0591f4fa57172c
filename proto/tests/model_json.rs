//! The model reads and writes the JSON of Nomad's HTTP API.

mod common;

use common::*;
use proto::model::*;
use serde_json::{json, Value};

#[test]
fn job_from_nomad_json() {
    let job: Job = round_trip(JOB_JSON);

    assert_eq!(job.id, "example");
    assert_eq!(job.name, "example");
    assert_eq!(job.namespace, "default");
    assert_eq!(job.region, "global");
    assert_eq!(job.r#type, JOB_TYPE_SERVICE);
    assert_eq!(job.priority, 50);
    assert_eq!(job.datacenters, ["dc1", "dc2"]);
    assert_eq!(job.node_pool, "default");
    assert_eq!(job.meta["owner"], "platform");
    assert_eq!(job.status, JOB_STATUS_RUNNING);
    assert_eq!(job.version, 2);
    assert_eq!(job.submit_time, 1_703_078_210_938_251_000);
    assert_eq!(
        (job.create_index, job.modify_index, job.job_modify_index),
        (16, 19, 16)
    );
    assert_eq!(
        job.constraints,
        [Constraint {
            l_target: "${attr.kernel.name}".into(),
            r_target: "linux".into(),
            operand: "=".into(),
        }]
    );
    assert_eq!(job.periodic, None);
    assert_eq!(job.multiregion, None);
    let job_update = job.update.as_ref().expect("job update");
    assert_eq!(
        (job_update.max_parallel, job_update.stagger),
        (1, 30 * SECOND)
    );

    let group = job.task_group("cache").expect("group cache");
    assert_eq!(group.count, 3);
    assert_eq!(group.constraints[0].operand, CONSTRAINT_DISTINCT_HOSTS);
    assert_eq!(group.ephemeral_disk.size_mb, 300);
    assert_eq!(group.shutdown_delay, None);
    let restart = group.restart_policy.as_ref().expect("restart policy");
    assert_eq!(
        (
            restart.attempts,
            restart.interval,
            restart.delay,
            restart.mode.as_str()
        ),
        (2, 30 * MINUTE, 15 * SECOND, "fail")
    );
    let reschedule = group.reschedule_policy.as_ref().expect("reschedule policy");
    assert_eq!(reschedule.max_delay, HOUR);
    assert_eq!(reschedule.delay_function, "exponential");
    assert!(reschedule.unlimited);
    let update = group.update.as_ref().expect("group update");
    assert_eq!(update.canary, 1);
    assert!(update.auto_revert);
    assert_eq!(update.progress_deadline, Some(10 * MINUTE));
    assert_eq!(
        group.migrate.as_ref().map(|m| m.healthy_deadline),
        Some(5 * MINUTE)
    );
    let port = &group.networks[0].dynamic_ports[0];
    assert_eq!(
        (
            port.label.as_str(),
            port.value,
            port.to,
            port.host_network.as_str()
        ),
        ("db", 0, 6379, "default")
    );
    assert_eq!(group.services.len(), 1);
    assert_eq!(group.services[0]["Name"], "redis-cache");
    let spread = &group.spreads[0];
    assert_eq!(spread.attribute, "${node.datacenter}");
    assert_eq!(
        spread.spread_target,
        [
            SpreadTarget {
                value: "dc1".into(),
                percent: 70
            },
            SpreadTarget {
                value: "dc2".into(),
                percent: 30
            },
        ]
    );

    let task = &group.tasks[0];
    assert_eq!(task.name, "redis");
    assert_eq!(task.driver, "docker");
    assert_eq!(task.config["image"], "redis:7");
    assert_eq!(task.config["args"], json!(["--appendonly", "yes"]));
    assert_eq!(task.env["REDIS_PORT"], "${NOMAD_PORT_db}");
    assert_eq!(task.kill_timeout, 20 * SECOND);
    assert_eq!(task.kill_signal, "SIGTERM");
    assert_eq!(task.affinities[0].weight, -25);
    assert_eq!(
        (
            task.resources.cpu,
            task.resources.memory_mb,
            task.resources.memory_max_mb
        ),
        (500, 256, 512)
    );
    assert_eq!(
        (task.log_config.max_files, task.log_config.max_file_size_mb),
        (10, 10)
    );
    assert_eq!(task.lifecycle, None);
}

#[test]
fn nomad_job_is_valid() {
    let job: Job = parse(JOB_JSON);
    assert_eq!(job.validate(), Ok(()));
}

#[test]
fn allocation_from_nomad_json() {
    let alloc: Allocation = round_trip(ALLOCATION_JSON);

    assert_eq!(alloc.id, "8ba85cef-ba2c-8ad5-bf2d-98ca7ad95a1e");
    assert_eq!(alloc.eval_id, "2c7c3a53-7e05-a4e7-3a8d-c6a2a3f9d0b1");
    assert_eq!(alloc.name, "example.cache[0]");
    assert_eq!(alloc.node_id, "f7476465-4d6e-c0de-26d0-e383c49be941");
    assert_eq!(alloc.node_name, "client-1");
    assert_eq!(alloc.job_id, "example");
    assert_eq!(alloc.task_group, "cache");
    assert_eq!(alloc.desired_status, ALLOC_DESIRED_RUN);
    assert_eq!(alloc.client_status, ALLOC_CLIENT_RUNNING);
    assert_eq!(alloc.deployment_id, "0c5c6b3a-52ac-b6b3-5b2d-b8a2fd0f9c4e");
    assert_eq!(
        alloc.previous_allocation,
        "3a6c1dc5-6d5b-2b1f-a1d0-2c1d2d5e3f4a"
    );
    assert_eq!(alloc.job_version, 2);
    assert_eq!(
        (
            alloc.create_index,
            alloc.modify_index,
            alloc.alloc_modify_index
        ),
        (21, 29, 25)
    );
    assert_eq!(alloc.create_time, 1_703_078_211_183_245_000);
    assert!(!alloc.terminal());

    let job = alloc.job.as_deref().expect("embedded job");
    assert_eq!(job.task_groups[0].tasks[0].resources.cpu, 500);
    assert_eq!(
        alloc.resources.as_ref().map(|r| (r.cpu, r.disk_mb)),
        Some((500, 300))
    );

    let allocated = alloc.allocated_resources.as_ref().expect("allocated");
    assert_eq!(allocated.tasks["redis"].cpu.cpu_shares, 500);
    assert_eq!(allocated.tasks["redis"].memory.memory_max_mb, 512);
    assert_eq!(allocated.task_lifecycles["redis"], None);
    assert_eq!(allocated.shared.disk_mb, 300);
    assert_eq!(
        allocated.shared.ports,
        [AllocatedPortMapping {
            label: "db".into(),
            value: 22017,
            to: 6379,
            host_ip: "10.0.2.15".into(),
        }]
    );
    assert_eq!(allocated.shared.networks[0].ip, "10.0.2.15");

    let status = alloc.deployment_status.as_ref().expect("deployment status");
    assert_eq!(status.healthy, Some(true));
    assert_eq!(
        status.timestamp.as_deref(),
        Some("2023-12-20T13:16:58.432122Z")
    );
    assert_eq!(alloc.desired_transition.reschedule, Some(true));
    assert_eq!(alloc.desired_transition.migrate, None);

    let tracker = alloc.reschedule_tracker.as_ref().expect("tracker");
    assert_eq!(tracker.events[0].delay, 30 * SECOND);
    assert_eq!(
        tracker.events[0].prev_node_id,
        "aa0b2f53-d3d8-a1c2-3b9e-4b5f6a7c8d9e"
    );
    assert_eq!(
        alloc
            .metrics
            .as_ref()
            .map(|m| m.decode::<serde_json::Value>().unwrap()["NodesEvaluated"].clone()),
        Some(json!(1))
    );

    let state = &alloc.task_states["redis"];
    assert_eq!(state.state, TASK_STATE_RUNNING);
    assert_eq!(state.restarts, 1);
    assert_eq!(state.finished_at, None);
    assert_eq!(state.started_at.as_deref(), Some("2023-12-20T13:16:53.1Z"));
    assert_eq!(state.events.len(), 3);
    let terminated = &state.events[1];
    assert_eq!(terminated.r#type, TASK_EVENT_TERMINATED);
    assert_eq!(terminated.time, 1_703_078_212_500_000_000);
    assert_eq!((terminated.exit_code, terminated.signal), (137, 9));
    assert_eq!(terminated.kill_timeout, 20 * SECOND);
    assert_eq!(terminated.details["exit_code"], "137");
    assert_eq!(state.events[0].display_message, "Task received by client");
}

#[test]
fn allocation_stub_has_the_list_fields() {
    let alloc: Allocation = parse(ALLOCATION_JSON);
    let stub = alloc.stub();
    assert_eq!(stub.id, alloc.id);
    assert_eq!(stub.eval_id, alloc.eval_id);
    assert_eq!(stub.name, alloc.name);
    assert_eq!(stub.namespace, alloc.namespace);
    assert_eq!(stub.node_id, alloc.node_id);
    assert_eq!(stub.node_name, alloc.node_name);
    assert_eq!(stub.job_id, "example");
    assert_eq!(stub.job_type, JOB_TYPE_SERVICE);
    assert_eq!(stub.job_version, 2);
    assert_eq!(stub.task_group, "cache");
    assert_eq!(stub.client_status, ALLOC_CLIENT_RUNNING);
    assert_eq!(stub.task_states, alloc.task_states);
    assert_eq!(stub.deployment_status, alloc.deployment_status);
    assert_eq!(stub.allocated_resources, alloc.allocated_resources);
    assert_eq!(
        (
            stub.create_index,
            stub.modify_index,
            stub.create_time,
            stub.modify_time
        ),
        (21, 29, alloc.create_time, alloc.modify_time)
    );

    // The stub serializes to Nomad's list item shape.
    let value = serde_json::to_value(&stub).expect("serialize");
    let object = value.as_object().expect("object");
    for key in [
        "ID",
        "EvalID",
        "Name",
        "Namespace",
        "NodeID",
        "NodeName",
        "JobID",
        "JobType",
        "JobVersion",
        "TaskGroup",
        "AllocatedResources",
        "DesiredStatus",
        "DesiredDescription",
        "ClientStatus",
        "ClientDescription",
        "DesiredTransition",
        "TaskStates",
        "DeploymentStatus",
        "FollowupEvalID",
        "NextAllocation",
        "RescheduleTracker",
        "PreemptedAllocations",
        "PreemptedByAllocation",
        "CreateIndex",
        "ModifyIndex",
        "CreateTime",
        "ModifyTime",
    ] {
        assert!(object.contains_key(key), "missing {key}");
    }
    assert!(!object.contains_key("Job"));
    let again: AllocListStub = round_trip(&value.to_string());
    assert_eq!(again, stub);
}

#[test]
fn node_from_nomad_json() {
    let node: Node = round_trip(NODE_JSON);

    assert_eq!(node.id, "f7476465-4d6e-c0de-26d0-e383c49be941");
    assert_eq!(node.name, "client-1");
    assert_eq!(node.datacenter, "dc1");
    assert_eq!(node.http_addr, "10.0.2.15:4646");
    assert!(!node.tls_enabled);
    assert_eq!(node.attributes["kernel.name"], "linux");
    assert_eq!(node.meta["rack"], "r1");
    assert_eq!(node.links["consul"], "dc1.client-1");
    assert_eq!(node.node_pool, "default");
    assert_eq!(node.computed_class, "v1:10952212473894849978");
    assert_eq!(node.status, NODE_STATUS_READY);
    assert_eq!(node.scheduling_eligibility, NODE_SCHEDULING_ELIGIBLE);
    assert_eq!(node.status_updated_at, 1_703_078_101);
    assert_eq!(node.drain_strategy, None);
    assert!(node.ready_for_scheduling());

    let resources = &node.node_resources;
    assert_eq!(resources.cpu.cpu_shares, 9600);
    assert_eq!(resources.cpu.total_cpu_cores, 4);
    assert_eq!(resources.cpu.reservable_cpu_cores, [0, 1, 2, 3]);
    assert_eq!(resources.memory.memory_mb, 7820);
    assert_eq!(resources.disk.disk_mb, 48000);
    assert_eq!(resources.networks[0].cidr, "10.0.2.15/32");
    assert_eq!(resources.networks[0].mbits, 1000);
    assert_eq!(
        (resources.min_dynamic_port, resources.max_dynamic_port),
        (20000, 32000)
    );
    let reserved = &node.reserved_resources;
    assert_eq!(reserved.cpu.cpu_shares, 100);
    assert_eq!(reserved.memory.memory_mb, 256);
    assert_eq!(reserved.networks.reserved_host_ports, "22");

    let raw_exec = &node.drivers["raw_exec"];
    assert!(raw_exec.detected && raw_exec.healthy);
    assert_eq!(raw_exec.attributes["driver.raw_exec"], "true");
    let docker = &node.drivers["docker"];
    assert!(!docker.detected && !docker.healthy);
    assert!(docker.attributes.is_empty());
    assert_eq!(node.events[0].message, "Node registered");
    assert_eq!(node.events[0].subsystem, "Cluster");
}

#[test]
fn node_stub_takes_address_and_version_from_attributes() {
    let node: Node = parse(NODE_JSON);
    let stub = node.stub();
    assert_eq!(stub.address, "10.0.2.15");
    assert_eq!(stub.version, "1.7.2");
    assert_eq!(stub.id, node.id);
    assert_eq!(stub.name, "client-1");
    assert_eq!(stub.datacenter, "dc1");
    assert_eq!(stub.node_pool, "default");
    assert_eq!(stub.status, NODE_STATUS_READY);
    assert_eq!(stub.scheduling_eligibility, NODE_SCHEDULING_ELIGIBLE);
    assert_eq!(stub.drivers, node.drivers);
    assert_eq!((stub.create_index, stub.modify_index), (6, 9));
    assert_eq!(stub.attributes, None);

    let value = serde_json::to_value(&stub).expect("serialize");
    assert_eq!(value["Address"], "10.0.2.15");
    assert_eq!(value["ID"], node.id.as_str());
    assert!(value.get("SecretID").is_none());
}

#[test]
fn drain_strategy_is_flat_like_nomad() {
    // Nomad embeds DrainSpec in DrainStrategy, so its fields are flattened.
    let node: Node = parse(
        r#"{
            "ID": "n1",
            "Drain": true,
            "DrainStrategy": {
                "Deadline": 3600000000000,
                "IgnoreSystemJobs": true,
                "ForceDeadline": "2023-12-20T14:15:01Z",
                "StartedAt": "2023-12-20T13:15:01Z"
            },
            "SchedulingEligibility": "ineligible",
            "Status": "ready"
        }"#,
    );
    let drain = node.drain_strategy.as_ref().expect("drain strategy");
    assert_eq!(drain.deadline, HOUR);
    assert!(drain.ignore_system_jobs);
    assert_eq!(
        drain.force_deadline.as_deref(),
        Some("2023-12-20T14:15:01Z")
    );
    assert!(!node.ready_for_scheduling());
}

#[test]
fn evaluation_from_nomad_json() {
    let eval: Evaluation = round_trip(EVALUATION_JSON);

    assert_eq!(eval.id, "2c7c3a53-7e05-a4e7-3a8d-c6a2a3f9d0b1");
    assert_eq!(eval.namespace, "default");
    assert_eq!(eval.priority, 50);
    assert_eq!(eval.r#type, JOB_TYPE_SERVICE);
    assert_eq!(eval.triggered_by, EVAL_TRIGGER_JOB_REGISTER);
    assert_eq!(eval.job_id, "example");
    assert_eq!(eval.job_modify_index, 16);
    assert_eq!(eval.status, EVAL_STATUS_COMPLETE);
    assert_eq!(eval.blocked_eval, "d1a0bd43-6a4e-2bd5-6c4d-1d5c6b2a1e0f");
    assert_eq!(eval.wait, 0);
    assert_eq!(eval.wait_until.as_deref(), Some("0001-01-01T00:00:00Z"));
    assert_eq!(eval.queued_allocations["web"], 3);
    assert_eq!(eval.failed_tg_allocs["web"]["CoalescedFailures"], 2);
    assert!(eval.class_eligibility["v1:10952212473894849978"]);
    assert_eq!(eval.snapshot_index, 17);
    assert_eq!((eval.create_index, eval.modify_index), (17, 20));
    assert_eq!(eval.modify_time, 1_703_078_211_190_001_000);
    assert!(eval.terminal());
}

#[test]
fn deployment_from_nomad_json() {
    let deployment: Deployment = round_trip(DEPLOYMENT_JSON);

    assert_eq!(deployment.id, "0c5c6b3a-52ac-b6b3-5b2d-b8a2fd0f9c4e");
    assert_eq!(deployment.job_id, "example");
    assert_eq!(deployment.job_version, 2);
    assert_eq!(
        (
            deployment.job_modify_index,
            deployment.job_spec_modify_index,
            deployment.job_create_index
        ),
        (16, 16, 16)
    );
    assert_eq!(deployment.status, DEPLOYMENT_STATUS_RUNNING);
    assert!(deployment.active());
    let state = &deployment.task_groups["cache"];
    assert!(state.auto_revert && !state.auto_promote && !state.promoted);
    assert_eq!(state.progress_deadline, 10 * MINUTE);
    assert_eq!(
        state.require_progress_by.as_deref(),
        Some("2023-12-20T13:26:58.432122Z")
    );
    assert_eq!(
        state.placed_canaries,
        ["8ba85cef-ba2c-8ad5-bf2d-98ca7ad95a1e"]
    );
    assert_eq!(
        (
            state.desired_canaries,
            state.desired_total,
            state.placed_allocs,
            state.healthy_allocs,
            state.unhealthy_allocs
        ),
        (1, 3, 1, 1, 0)
    );
}

#[test]
fn serialized_field_names_are_nomads() {
    let cases: [(&str, Value, &[&str]); 5] = [
        ("job", to_value::<Job>(JOB_JSON), &[]),
        // The embedded job of the sample is abridged.
        (
            "allocation",
            to_value::<Allocation>(ALLOCATION_JSON),
            &["Job"],
        ),
        ("node", to_value::<Node>(NODE_JSON), &[]),
        ("evaluation", to_value::<Evaluation>(EVALUATION_JSON), &[]),
        ("deployment", to_value::<Deployment>(DEPLOYMENT_JSON), &[]),
    ];
    let samples = [
        JOB_JSON,
        ALLOCATION_JSON,
        NODE_JSON,
        EVALUATION_JSON,
        DEPLOYMENT_JSON,
    ];
    for ((name, ours, skip), sample) in cases.into_iter().zip(samples) {
        let nomad: Value = parse(sample);
        eprintln!("checking {name}");
        assert_names_match(&ours, &nomad, "", skip);
    }
}

fn to_value<T: serde::de::DeserializeOwned + serde::Serialize>(json: &str) -> Value {
    serde_json::to_value(parse::<T>(json)).expect("serialize")
}

#[test]
fn renamed_fields_use_nomads_spelling() {
    let job: Job = parse(JOB_JSON);
    let value = serde_json::to_value(&job).expect("serialize");
    let group = &value["TaskGroups"][0];
    let task = &group["Tasks"][0];
    assert_eq!(value["ID"], "example");
    assert_eq!(value["ParentID"], "");
    assert_eq!(value["Type"], "service");
    assert_eq!(value["Constraints"][0]["LTarget"], "${attr.kernel.name}");
    assert_eq!(value["Constraints"][0]["RTarget"], "linux");
    assert_eq!(group["EphemeralDisk"]["SizeMB"], 300);
    assert_eq!(group["Networks"][0]["CIDR"], "");
    assert_eq!(group["Networks"][0]["IP"], "");
    assert_eq!(group["Networks"][0]["MBits"], 0);
    assert_eq!(group["Networks"][0]["DNS"], Value::Null);
    assert_eq!(task["Resources"]["CPU"], 500);
    assert_eq!(task["Resources"]["MemoryMB"], 256);
    assert_eq!(task["Resources"]["MemoryMaxMB"], 512);
    assert_eq!(task["Resources"]["DiskMB"], 0);
    assert_eq!(task["LogConfig"]["MaxFileSizeMB"], 10);
    assert_eq!(task["Affinities"][0]["Weight"], -25);

    let node: Value = to_value::<Node>(NODE_JSON);
    assert_eq!(node["HTTPAddr"], "10.0.2.15:4646");
    assert_eq!(node["TLSEnabled"], false);
    assert_eq!(node["SecretID"], "");
    let eval: Value = to_value::<Evaluation>(EVALUATION_JSON);
    assert_eq!(eval["FailedTGAllocs"]["web"]["NodesExhausted"], 1);
    assert_eq!(eval["JobID"], "example");
    let alloc: Value = to_value::<Allocation>(ALLOCATION_JSON);
    assert_eq!(alloc["EvalID"], "2c7c3a53-7e05-a4e7-3a8d-c6a2a3f9d0b1");
    assert_eq!(
        alloc["DeploymentID"],
        "0c5c6b3a-52ac-b6b3-5b2d-b8a2fd0f9c4e"
    );
    assert_eq!(alloc["FollowupEvalID"], "");
    assert_eq!(
        alloc["RescheduleTracker"]["Events"][0]["PrevAllocID"],
        "3a6c1dc5-6d5b-2b1f-a1d0-2c1d2d5e3f4a"
    );
    assert_eq!(
        alloc["AllocatedResources"]["Shared"]["Ports"][0]["HostIP"],
        "10.0.2.15"
    );
}

#[test]
fn durations_are_integer_nanoseconds() {
    let job: Job = parse(JOB_JSON);
    let value = serde_json::to_value(&job).expect("serialize");
    let group = &value["TaskGroups"][0];
    assert_eq!(group["Tasks"][0]["KillTimeout"], json!(20_000_000_000_i64));
    assert_eq!(
        group["RestartPolicy"]["Interval"],
        json!(1_800_000_000_000_i64)
    );
    assert_eq!(
        group["ReschedulePolicy"]["MaxDelay"],
        json!(3_600_000_000_000_i64)
    );
    assert_eq!(
        group["Update"]["HealthyDeadline"],
        json!(300_000_000_000_i64)
    );
    assert_eq!(group["ShutdownDelay"], Value::Null);

    let group: TaskGroup = parse(r#"{"Name": "g", "ShutdownDelay": 5000000000}"#);
    assert_eq!(group.shutdown_delay, Some(5 * SECOND));
    // A duration is a number, never a string such as "5s".
    assert!(serde_json::from_str::<TaskGroup>(r#"{"ShutdownDelay": "5s"}"#).is_err());
}

#[test]
fn every_value_may_be_null() {
    let tried = assert_parses_with_each_value_null::<Job>(JOB_JSON)
        + assert_parses_with_each_value_null::<Allocation>(ALLOCATION_JSON)
        + assert_parses_with_each_value_null::<Node>(NODE_JSON)
        + assert_parses_with_each_value_null::<Evaluation>(EVALUATION_JSON)
        + assert_parses_with_each_value_null::<Deployment>(DEPLOYMENT_JSON);
    assert!(tried > 400, "only {tried} values tried");
}

#[test]
fn null_becomes_the_default() {
    let job: Job = parse(
        r#"{
            "ID": "nulls",
            "Name": null,
            "Priority": null,
            "AllAtOnce": null,
            "Datacenters": [null, "dc1"],
            "Meta": {"a": null, "b": "x"},
            "Constraints": [null],
            "Update": null,
            "TaskGroups": [{
                "Name": "g",
                "Count": null,
                "EphemeralDisk": null,
                "RestartPolicy": null,
                "Tasks": [{
                    "Name": "t",
                    "Config": null,
                    "Env": null,
                    "Resources": {"CPU": null, "MemoryMB": 64, "Networks": null},
                    "LogConfig": null
                }]
            }]
        }"#,
    );
    assert_eq!(job.name, "");
    assert_eq!(job.priority, 0);
    assert!(!job.all_at_once);
    assert_eq!(job.datacenters, ["", "dc1"]);
    assert_eq!(job.meta["a"], "");
    assert_eq!(job.meta["b"], "x");
    assert_eq!(job.constraints, [Constraint::default()]);
    assert_eq!(job.update, None);
    let group = &job.task_groups[0];
    assert_eq!(group.count, 1, "a null count is Nomad's default of 1");
    assert_eq!(group.ephemeral_disk, EphemeralDisk::default());
    assert_eq!(group.restart_policy, None);
    let task = &group.tasks[0];
    assert!(task.config.is_empty() && task.env.is_empty());
    assert_eq!(task.resources.cpu, 0);
    assert_eq!(task.resources.memory_mb, 64);
    assert_eq!(task.log_config, LogConfig::default());

    // A body of nulls is an empty value.
    let all_null: Job = parse(
        r#"{"ID": null, "TaskGroups": null, "Meta": null, "Multiregion": null, "Version": null}"#,
    );
    assert_eq!(all_null, Job::default());
    assert_eq!(parse::<Node>("{}"), Node::default());
    assert_eq!(
        parse::<Allocation>(r#"{"TaskStates": null}"#),
        Allocation::default()
    );
}

#[test]
fn group_count_defaults_to_one_only_when_absent() {
    assert_eq!(parse::<TaskGroup>(r#"{"Name": "g"}"#).count, 1);
    assert_eq!(parse::<TaskGroup>(r#"{"Count": null}"#).count, 1);
    assert_eq!(parse::<TaskGroup>(r#"{"Count": 0}"#).count, 0);
    assert_eq!(parse::<TaskGroup>(r#"{"Count": 7}"#).count, 7);
    assert_eq!(TaskGroup::default().count, 1);
}

#[test]
fn unknown_fields_are_ignored() {
    for (json, check) in [
        (JOB_JSON, check_unknown::<Job> as fn(&str)),
        (ALLOCATION_JSON, check_unknown::<Allocation>),
        (NODE_JSON, check_unknown::<Node>),
        (EVALUATION_JSON, check_unknown::<Evaluation>),
        (DEPLOYMENT_JSON, check_unknown::<Deployment>),
    ] {
        check(json);
    }

    // Outside free-form values, unknown fields change nothing.
    let plain: Job =
        parse(r#"{"ID": "j", "TaskGroups": [{"Name": "g", "Tasks": [{"Name": "t"}]}]}"#);
    let extra: Job = parse(
        r#"{"ID": "j", "Consul": {"Namespace": "x"}, "VaultToken": "s",
            "TaskGroups": [{"Name": "g", "Disconnect": {"LostAfter": 1},
                "Tasks": [{"Name": "t", "Identity": {"Env": true}, "CSIPluginConfig": null}]}]}"#,
    );
    assert_eq!(plain, extra);
}

fn check_unknown<T: serde::de::DeserializeOwned>(json: &str) {
    let mut value: Value = parse(json);
    add_unknown_fields(&mut value);
    if let Err(error) = serde_json::from_value::<T>(value) {
        panic!("unknown fields rejected: {error}");
    }
}

#[test]
fn job_stub_matches_the_list_shape() {
    let job: Job = parse(JOB_JSON);
    let summary = JobSummary {
        job_id: "example".into(),
        namespace: "default".into(),
        summary: [(
            "cache".to_owned(),
            TaskGroupSummary {
                running: 3,
                ..TaskGroupSummary::default()
            },
        )]
        .into(),
        ..JobSummary::default()
    };
    let stub = job.stub(Some(summary.clone()));
    assert_eq!(stub.id, "example");
    assert_eq!(stub.name, "example");
    assert_eq!(stub.namespace, "default");
    assert_eq!(stub.datacenters, ["dc1", "dc2"]);
    assert_eq!(stub.node_pool, "default");
    assert_eq!(stub.r#type, JOB_TYPE_SERVICE);
    assert_eq!(stub.priority, 50);
    assert!(!stub.periodic && !stub.parameterized_job && !stub.stop);
    assert_eq!(stub.status, JOB_STATUS_RUNNING);
    assert_eq!(stub.job_summary, Some(summary));
    assert_eq!(
        (
            stub.create_index,
            stub.modify_index,
            stub.job_modify_index,
            stub.submit_time,
            stub.version
        ),
        (16, 19, 16, job.submit_time, 2)
    );

    let periodic = Job {
        periodic: Some(
            serde_json::from_value(json!({"Enabled": true, "Spec": "*/15 * * * *"}))
                .expect("periodic"),
        ),
        parameterized_job: Some(
            serde_json::from_value(json!({"Payload": "optional"})).expect("parameterized"),
        ),
        ..job
    };
    let stub = periodic.stub(None);
    assert!(stub.periodic && stub.parameterized_job);
    assert_eq!(stub.job_summary, None);
}

#[test]
fn job_list_item_from_nomad_json() {
    let stub: JobListStub = round_trip(
        r#"{
            "ID": "example", "ParentID": "", "Name": "example", "Namespace": "default",
            "Datacenters": ["dc1"], "NodePool": "default", "Multiregion": null,
            "Type": "service", "Priority": 50, "Periodic": false, "ParameterizedJob": false,
            "Stop": false, "Status": "running", "StatusDescription": "",
            "JobSummary": {
                "JobID": "example", "Namespace": "default",
                "Summary": {"cache": {"Queued": 0, "Complete": 1, "Failed": 2, "Running": 3,
                                       "Starting": 4, "Lost": 5, "Unknown": 6}},
                "Children": {"Pending": 1, "Running": 2, "Dead": 3},
                "CreateIndex": 16, "ModifyIndex": 30
            },
            "CreateIndex": 16, "ModifyIndex": 19, "JobModifyIndex": 16,
            "SubmitTime": 1703078210938251000
        }"#,
    );
    let summary = stub.job_summary.as_ref().expect("summary");
    assert_eq!(
        summary.summary["cache"],
        TaskGroupSummary {
            queued: 0,
            complete: 1,
            failed: 2,
            running: 3,
            starting: 4,
            lost: 5,
            unknown: 6,
        }
    );
    assert_eq!(
        summary.children,
        JobChildrenSummary {
            pending: 1,
            running: 2,
            dead: 3
        }
    );
    assert_eq!(summary.modify_index, 30);
    assert_eq!(stub.submit_time, 1_703_078_210_938_251_000);
}

#[test]
fn node_list_item_from_nomad_json() {
    let stub: NodeListStub = round_trip(
        r#"{
            "Address": "10.0.2.15", "ID": "f7476465-4d6e-c0de-26d0-e383c49be941",
            "Datacenter": "dc1", "Name": "client-1", "NodeClass": "", "NodePool": "default",
            "Version": "1.7.2", "Drain": false, "SchedulingEligibility": "eligible",
            "Status": "ready", "StatusDescription": "",
            "Drivers": {"raw_exec": {"Detected": true, "Healthy": true}},
            "HostVolumes": null, "LastDrain": null, "CreateIndex": 6, "ModifyIndex": 9
        }"#,
    );
    assert_eq!(stub.address, "10.0.2.15");
    assert!(stub.drivers["raw_exec"].healthy);
    assert_eq!(stub.node_resources, None);
}

#[test]
fn register_request_and_responses() {
    let request: JobRegisterRequest = round_trip(&format!(
        r#"{{"Job": {JOB_JSON}, "EnforceIndex": true, "JobModifyIndex": 16,
             "PolicyOverride": false, "PreserveCounts": true, "Region": "global",
             "Namespace": "default", "SecretID": "ignored"}}"#
    ));
    assert_eq!(
        request.job.as_ref().map(|job| job.id.as_str()),
        Some("example")
    );
    assert!(request.enforce_index && request.preserve_counts && !request.policy_override);
    assert_eq!(request.job_modify_index, 16);
    assert_eq!(parse::<JobRegisterRequest>(r#"{"Job": null}"#).job, None);

    let response = JobRegisterResponse {
        eval_id: "e1".into(),
        eval_create_index: 20,
        job_modify_index: 19,
        warnings: String::new(),
        index: 20,
    };
    assert_eq!(
        serde_json::to_value(&response).expect("serialize"),
        json!({"EvalID": "e1", "EvalCreateIndex": 20, "JobModifyIndex": 19, "Warnings": "", "Index": 20})
    );
    let response: JobDeregisterResponse = round_trip(
        r#"{"EvalID": "e2", "EvalCreateIndex": 31, "JobModifyIndex": 31, "VolumeEvalID": "",
            "VolumeEvalIndex": 0, "Index": 31, "LastContact": 0, "KnownLeader": false}"#,
    );
    assert_eq!((response.eval_id.as_str(), response.index), ("e2", 31));

    let request: JobValidateRequest = round_trip(&format!(r#"{{"Job": {JOB_JSON}}}"#));
    assert!(request.job.is_some());
    let response: JobValidateResponse = round_trip(
        r#"{"DriverConfigValidated": false, "ValidationErrors": ["a", "b"], "Error": "2 errors occurred:\n\t* a\n\t* b\n\n", "Warnings": ""}"#,
    );
    assert_eq!(response.validation_errors, ["a", "b"]);
}

#[test]
fn new_ids_are_uuids() {
    let a = new_id();
    let b = new_id();
    assert_ne!(a, b);
    assert_eq!(a.len(), 36);
    assert_eq!(a.matches('-').count(), 4);
}
