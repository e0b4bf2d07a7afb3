//! A stand-in for the parts of a cluster that run Jobs: the Job controller (pods for a Job,
//! its status counters and conditions, `backoffLimit`, `podFailurePolicy` with exit codes,
//! `activeDeadlineSeconds`, `ttlSecondsAfterFinished`) and a kubelet (runs each pod's
//! container as a local process of the image's binary with the environment the pod spec
//! declares, reports the pod's status, stops pods being deleted). It acts on the double's
//! store directly, through the same write paths as API requests.
//!
//! Differences from a cluster, on purpose: no scheduler (pods are created bound to this
//! node), a retry delay of `retry_delay` instead of the 10 s × 2ⁿ back-off, no job-tracking
//! finalizers on pods, no container isolation (resources, security context and the
//! read-only root are not enforced), and a pod whose spec mounts its service-account token
//! gets `KUBECONFIG` (the double, with that account's token) instead of a token file and
//! `KUBERNETES_SERVICE_HOST`; a pod with `automountServiceAccountToken: false` gets neither.
//!
//! What it derives from the pod spec, as a kubelet does: `imagePullPolicy: Never` with an
//! image that is not on the node waits `ErrImageNeverPull`; an image reference that does not
//! parse waits `InvalidImageName`; a missing Secret or key waits
//! `CreateContainerConfigError`. The Job controller honours `podFailurePolicy` rules on exit
//! codes and on the `DisruptionTarget` condition (an `Ignore` rule: an evicted pod does not
//! count against `backoffLimit`), and records a core/v1 `FailedCreate` Event on the Job when
//! a pod cannot be created (a ResourceQuota).
//!
//! Faults it can be told to inject: SIGKILL a pod's process (exit 137, reason `Error`), an
//! OOM kill (exit 137, reason `OOMKilled`), an image that cannot be pulled (`ErrImagePull`
//! then `ImagePullBackOff`, no process), a pod the scheduler cannot place (`PodScheduled`
//! False, reason `Unschedulable`).

#![allow(dead_code)]

use crate::kube_double::{
    name_of, now, uid_of, DeleteOpts, Double, Selector, Sub, WriteOpts, JOBS, PODS,
};
use serde_json::{json, Value};
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::{sync::mpsc, task::JoinHandle};

pub const NODE: &str = "stand-in-node";
const MANAGER: &str = "stand-in-kubelet";
const JOB_MANAGER: &str = "stand-in-job-controller";

#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The container is OOM-killed this long after it starts.
    OomKilled { after: Duration },
    /// The container starts this long after the pod is seen (waiting `ContainerCreating`).
    SlowStart(Duration),
    /// The image cannot be pulled: no process, the container waits.
    ImagePullBackOff,
    /// The image cannot be pulled for this long after the pod is first seen (a registry's
    /// rate limit), then it is.
    ImagePullBackOffFor(Duration),
    /// The container is OOM-killed this long after it starts while its memory limit is below
    /// `bytes` (an import that needs that much memory).
    OomKilledBelow { bytes: u64, after: Duration },
    /// The first `times` pods of the import get a `DATABASE_URL` whose server refuses
    /// connections (a database out of connections); later pods the real one.
    DatabaseRefuses { times: usize },
    /// The scheduler cannot place the pod (this message, e.g. insufficient memory).
    Unschedulable(String),
}

#[derive(Debug, Clone)]
struct FaultRule {
    /// Matches pods whose Job's ImportJob has this `spec.source.fileName`.
    file_name: String,
    fault: Fault,
}

#[derive(Debug)]
enum Signal {
    Term,
    Kill,
}

struct Running {
    signals: mpsc::UnboundedSender<Signal>,
    pid: Option<u32>,
    /// A signal was sent because the pod is being deleted.
    terminating: bool,
}

#[derive(Default)]
struct State {
    faults: Vec<FaultRule>,
    /// Pods this kubelet started a process for (by uid), running or finished.
    started: HashSet<String>,
    running: HashMap<String, Running>,
    /// Pods whose process must be reported as OOM-killed.
    oom: HashSet<String>,
    /// Pods counted into their Job's status, per Job uid.
    counted: HashMap<String, HashSet<String>>,
    /// Pods seen active per Job uid (a pod that disappears uncounted counts as failed).
    active_seen: HashMap<String, HashSet<String>>,
    last_failure: HashMap<String, Instant>,
    pull_attempted: HashMap<String, Instant>,
    /// The fault decided for a pod when first seen (its Job may be gone later).
    pod_faults: HashMap<String, Option<Fault>>,
    /// Pods seen with the `DisruptionTarget` condition (by uid), for podFailurePolicy.
    disrupted: HashSet<String>,
    /// FailedCreate Events recorded, per Job uid and message.
    failed_creates: HashSet<(String, String)>,
    /// The environment each pod's process was started with (by pod name).
    envs: HashMap<String, Vec<(String, String)>>,
    /// Pods given a refusing database, per file name (`Fault::DatabaseRefuses`).
    refused: HashMap<String, usize>,
}

pub struct Kubelet {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    double: Arc<Double>,
    /// Image name → directory holding the image's executables.
    images: HashMap<String, PathBuf>,
    /// Extra environment of every container (PATH).
    extra_env: Vec<(String, String)>,
    /// Service account → a kubeconfig with its token, for pods that mount their token.
    accounts: HashMap<String, PathBuf>,
    logs: PathBuf,
    retry_delay: Duration,
    state: Mutex<State>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
        let state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        for r in state.running.values() {
            let _ = r.signals.send(Signal::Kill);
            if let Some(pid) = r.pid {
                // The process tasks may not get to run again: kill directly too.
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Kubelet {
    pub fn start(
        double: Arc<Double>,
        images: HashMap<String, PathBuf>,
        extra_env: Vec<(String, String)>,
        accounts: HashMap<String, PathBuf>,
        logs: &Path,
        retry_delay: Duration,
    ) -> Kubelet {
        std::fs::create_dir_all(logs).unwrap();
        let shared = Arc::new(Shared {
            double,
            images,
            extra_env,
            accounts,
            logs: logs.to_path_buf(),
            retry_delay,
            state: Mutex::default(),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let mut rx = s.double.subscribe();
            loop {
                sync(&s).await;
                tokio::select! {
                    _ = rx.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        });
        Kubelet { shared, task }
    }

    /// Pods of Jobs run for an ImportJob of this file name get this fault.
    pub fn inject(&self, file_name: &str, fault: Fault) {
        lock(&self.shared).faults.push(FaultRule {
            file_name: file_name.into(),
            fault,
        });
    }

    /// Pods started from now on for this file name get no fault.
    pub fn clear(&self, file_name: &str) {
        lock(&self.shared)
            .faults
            .retain(|rule| rule.file_name != file_name);
    }

    /// SIGKILLs the process of a running pod (its container exits 137).
    pub fn kill(&self, pod: &str) {
        self.signal(pod, Signal::Kill);
    }

    fn signal(&self, pod: &str, sig: Signal) {
        let (list, _) = self.shared.double.list(&PODS, None, &Selector::default());
        let uid = list
            .iter()
            .find(|p| name_of(p) == pod)
            .map(|p| uid_of(p).to_string())
            .unwrap_or_else(|| panic!("no pod {pod}"));
        let state = lock(&self.shared);
        let r = state
            .running
            .get(&uid)
            .unwrap_or_else(|| panic!("pod {pod} has no running process"));
        r.signals.send(sig).expect("process task alive");
    }

    /// The log (stdout and stderr) of a pod's process.
    /// The environment a pod's process was started with (empty if it never started).
    pub fn env_of(&self, pod: &str) -> Vec<(String, String)> {
        lock(&self.shared)
            .envs
            .get(pod)
            .cloned()
            .unwrap_or_default()
    }

    pub fn log(&self, pod: &str) -> String {
        std::fs::read_to_string(self.shared.logs.join(format!("{pod}.log"))).unwrap_or_default()
    }

    /// Every pod log, for failure messages.
    pub fn all_logs(&self) -> String {
        let mut out = String::new();
        if let Ok(dir) = std::fs::read_dir(&self.shared.logs) {
            let mut paths: Vec<_> = dir.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                out.push_str(&format!(
                    "--- pod log {} ---\n{}\n",
                    p.display(),
                    std::fs::read_to_string(&p).unwrap_or_default()
                ));
            }
        }
        out
    }
}

fn condition_true(obj: &Value, type_: &str) -> bool {
    obj["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == type_ && c["status"] == "True")
    })
}

fn owned_by(obj: &Value, uid: &str) -> bool {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|rs| rs.iter().any(|r| r["uid"] == uid))
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("Pending")
}

fn is_deleting(obj: &Value) -> bool {
    obj["metadata"]["deletionTimestamp"].is_string()
}

async fn sync(s: &Arc<Shared>) {
    let all = Selector::default();
    let (jobs, _) = s.double.list(&JOBS, None, &all);
    let (pods, _) = s.double.list(&PODS, None, &all);
    for job in &jobs {
        sync_job(s, job, &pods);
    }
    let (pods, _) = s.double.list(&PODS, None, &all);
    for pod in pods.iter().filter(|p| p["spec"]["nodeName"] == NODE) {
        sync_pod(s, pod);
    }
}

// ---------------------------------------------------------------------------------------
// The Job controller

fn job_condition(type_: &str, reason: &str, message: &str) -> Value {
    let t = now();
    json!({"type": type_, "status": "True", "reason": reason, "message": message,
           "lastProbeTime": t, "lastTransitionTime": t})
}

/// What the Job's podFailurePolicy does with a failed pod: the first rule that matches
/// (`onPodConditions`, e.g. `DisruptionTarget`, or `onExitCodes`) decides.
enum PolicyAction {
    /// Not counted against backoffLimit; a replacement pod is created.
    Ignore,
    /// The Job fails at once: (rule index, container, exit code).
    FailJob(usize, String, i64),
    /// No rule matched (or `Count`): counted as usual.
    Count,
}

fn has_condition(pod: &Value, type_: &str, status: &str) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == type_ && c["status"] == status)
    })
}

fn policy_action(job: &Value, pod: &Value, disrupted: bool) -> PolicyAction {
    let Some(rules) = job["spec"]["podFailurePolicy"]["rules"].as_array() else {
        return PolicyAction::Count;
    };
    for (i, rule) in rules.iter().enumerate() {
        if let Some(patterns) = rule["onPodConditions"].as_array() {
            let hit = patterns.iter().any(|p| {
                let (t, st) = (
                    p["type"].as_str().unwrap_or(""),
                    p["status"].as_str().unwrap_or("True"),
                );
                has_condition(pod, t, st) || (t == "DisruptionTarget" && st == "True" && disrupted)
            });
            if hit {
                return match rule["action"].as_str() {
                    Some("Ignore") => PolicyAction::Ignore,
                    Some("FailJob") => PolicyAction::FailJob(i, String::new(), 0),
                    _ => PolicyAction::Count,
                };
            }
            continue;
        }
        if let Some((i, c, code)) = exit_code_rule(i, rule, pod) {
            return if rule["action"] == "FailJob" {
                PolicyAction::FailJob(i, c, code)
            } else if rule["action"] == "Ignore" {
                PolicyAction::Ignore
            } else {
                PolicyAction::Count
            };
        }
    }
    PolicyAction::Count
}

/// Whether an `onExitCodes` rule matches a failed pod.
fn exit_code_rule(i: usize, rule: &Value, pod: &Value) -> Option<(usize, String, i64)> {
    let req = rule.get("onExitCodes")?;
    let values: Vec<i64> = req["values"]
        .as_array()?
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    for cs in pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if req["containerName"]
            .as_str()
            .is_some_and(|n| cs["name"] != n)
        {
            continue;
        }
        let Some(code) = cs["state"]["terminated"]["exitCode"].as_i64() else {
            continue;
        };
        let hit = match req["operator"].as_str() {
            Some("In") => values.contains(&code),
            Some("NotIn") => code != 0 && !values.contains(&code),
            _ => false,
        };
        if hit {
            return Some((i, cs["name"].as_str().unwrap_or("").to_string(), code));
        }
    }
    None
}

fn new_pod(job: &Value) -> Value {
    let template = &job["spec"]["template"];
    let mut spec = template["spec"].clone();
    spec["nodeName"] = NODE.into();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": format!("{}-", name_of(job)),
            "labels": template["metadata"]["labels"],
            "annotations": template["metadata"]["annotations"],
            "ownerReferences": [{
                "apiVersion": "batch/v1", "kind": "Job", "name": name_of(job),
                "uid": uid_of(job), "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": spec,
    })
}

fn sync_job(s: &Arc<Shared>, job: &Value, pods: &[Value]) {
    if is_deleting(job) {
        return;
    }
    let ns = job["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = name_of(job).to_string();
    let uid = uid_of(job).to_string();
    let mine: Vec<&Value> = pods.iter().filter(|p| owned_by(p, &uid)).collect();
    let finished = condition_true(job, "Complete") || condition_true(job, "Failed");
    if finished {
        // A finished Job has no running pods; it goes after ttlSecondsAfterFinished.
        for p in mine
            .iter()
            .filter(|p| !matches!(phase(p), "Succeeded" | "Failed") && !is_deleting(p))
        {
            let _ = s
                .double
                .delete(&PODS, &ns, name_of(p), &DeleteOpts::default());
        }
        if let (Some(ttl), Some(done)) = (
            job["spec"]["ttlSecondsAfterFinished"].as_i64(),
            job["status"]["completionTime"]
                .as_str()
                .or_else(|| finished_at(job))
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()),
        ) {
            if chrono::Utc::now() >= done + chrono::Duration::seconds(ttl) {
                let _ = s
                    .double
                    .delete(&JOBS, &ns, &name, &DeleteOpts::background());
            }
        }
        return;
    }
    if job["spec"]["suspend"] == true {
        return;
    }
    let mut status = job["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    if status["startTime"].is_null() {
        status["startTime"] = now().into();
    }
    let mut succeeded = status["succeeded"].as_i64().unwrap_or(0);
    let mut failed = status["failed"].as_i64().unwrap_or(0);
    let mut fail_job: Option<String> = None;
    {
        let mut st = lock(s);
        let State {
            counted,
            active_seen,
            last_failure,
            disrupted,
            ..
        } = &mut *st;
        let counted = counted.entry(uid.clone()).or_default();
        let seen = active_seen.entry(uid.clone()).or_default();
        for p in &mine {
            let puid = uid_of(p).to_string();
            if has_condition(p, "DisruptionTarget", "True") {
                disrupted.insert(puid.clone());
            }
            match phase(p) {
                "Succeeded" | "Failed" if !counted.contains(&puid) => {
                    counted.insert(puid.clone());
                    seen.remove(&puid);
                    if phase(p) == "Succeeded" {
                        succeeded += 1;
                    } else {
                        last_failure.insert(uid.clone(), Instant::now());
                        match policy_action(job, p, disrupted.contains(&puid)) {
                            PolicyAction::Ignore => {}
                            PolicyAction::FailJob(i, container, code) => {
                                failed += 1;
                                fail_job = Some(format!(
                                    "Container {container} for pod {ns}/{} failed with exit code {code} matching FailJob rule at index {i}",
                                    name_of(p)
                                ));
                            }
                            PolicyAction::Count => failed += 1,
                        }
                    }
                }
                "Succeeded" | "Failed" => {}
                _ => {
                    seen.insert(puid);
                }
            }
        }
        // An active pod that vanished (deleted) before it finished counts as failed.
        let present: HashSet<String> = mine.iter().map(|p| uid_of(p).to_string()).collect();
        let vanished: Vec<String> = seen
            .iter()
            .filter(|u| !present.contains(*u))
            .cloned()
            .collect();
        for v in vanished {
            seen.remove(&v);
            last_failure.insert(uid.clone(), Instant::now());
            // A disrupted pod gone before its failure was seen: what an Ignore rule on
            // DisruptionTarget decides for it.
            let ignored = disrupted.contains(&v)
                && matches!(policy_action(job, &json!({}), true), PolicyAction::Ignore);
            counted.insert(v);
            if !ignored {
                failed += 1;
            }
        }
    }
    let active: Vec<&&Value> = mine
        .iter()
        .filter(|p| !matches!(phase(p), "Succeeded" | "Failed") && !is_deleting(p))
        .collect();
    let terminating = mine
        .iter()
        .filter(|p| !matches!(phase(p), "Succeeded" | "Failed") && is_deleting(p))
        .count();
    let ready = active
        .iter()
        .filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .count();
    let backoff_limit = job["spec"]["backoffLimit"].as_i64().unwrap_or(6);
    let deadline_passed = job["spec"]["activeDeadlineSeconds"]
        .as_i64()
        .is_some_and(|d| {
            status["startTime"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|start| chrono::Utc::now() >= start + chrono::Duration::seconds(d))
        });
    let failure = if let Some(message) = fail_job {
        Some(("PodFailurePolicy", message))
    } else if failed > backoff_limit {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit".to_string(),
        ))
    } else if deadline_passed {
        Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline".to_string(),
        ))
    } else {
        None
    };
    let mut conditions: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    if succeeded >= job["spec"]["completions"].as_i64().unwrap_or(1) {
        conditions.push(job_condition(
            "SuccessCriteriaMet",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        ));
        conditions.push(job_condition(
            "Complete",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        ));
        status["completionTime"] = now().into();
    } else if let Some((reason, message)) = failure {
        for p in &active {
            let _ = s
                .double
                .delete(&PODS, &ns, name_of(p), &DeleteOpts::default());
        }
        conditions.push(job_condition("FailureTarget", reason, &message));
        conditions.push(job_condition("Failed", reason, &message));
    } else if active.is_empty() && terminating == 0 {
        let since_failure = lock(s).last_failure.get(&uid).map(Instant::elapsed);
        if since_failure.is_none_or(|d| d >= s.retry_delay) {
            match s
                .double
                .create(&PODS, &ns, new_pod(job), &WriteOpts::manager(JOB_MANAGER))
            {
                Ok(p) => {
                    lock(s)
                        .active_seen
                        .entry(uid.clone())
                        .or_default()
                        .insert(uid_of(&p).to_string());
                }
                Err(e) => {
                    // As the Job controller does: a Warning Event on the Job, once per
                    // message here (the real one aggregates repeats into a count).
                    let message = format!("Error creating: {}", e.message);
                    if lock(s)
                        .failed_creates
                        .insert((uid.clone(), message.clone()))
                    {
                        let event = json!({
                            "metadata": {"generateName": format!("{name}.")},
                            "involvedObject": {
                                "apiVersion": "batch/v1", "kind": "Job", "name": name,
                                "namespace": ns, "uid": uid,
                            },
                            "reason": "FailedCreate", "type": "Warning", "message": message,
                            "source": {"component": "job-controller"},
                            "firstTimestamp": now(), "lastTimestamp": now(), "count": 1,
                        });
                        if let Err(e) = s.double.create(
                            &crate::kube_double::CORE_EVENTS,
                            &ns,
                            event,
                            &WriteOpts::manager(JOB_MANAGER),
                        ) {
                            eprintln!("stand-in job controller: event: {}", e.message);
                        }
                    }
                    lock(s).last_failure.insert(uid.clone(), Instant::now());
                }
            }
        }
    }
    let (pods_now, _) = s.double.list(&PODS, Some(&ns), &Selector::default());
    let active_now = pods_now
        .iter()
        .filter(|p| {
            owned_by(p, &uid) && !matches!(phase(p), "Succeeded" | "Failed") && !is_deleting(p)
        })
        .count();
    let finished_now = conditions
        .iter()
        .any(|c| c["type"] == "Complete" || c["type"] == "Failed");
    status["active"] = json!(if finished_now { 0 } else { active_now });
    status["ready"] = json!(if finished_now { 0 } else { ready });
    status["terminating"] = json!(terminating);
    status["succeeded"] = json!(succeeded);
    status["failed"] = json!(failed);
    status["uncountedTerminatedPods"] = json!({});
    if !conditions.is_empty() {
        status["conditions"] = json!(conditions);
    }
    if status != job["status"] {
        let r = s
            .double
            .modify(&JOBS, &ns, &name, Sub::Status, JOB_MANAGER, |j| {
                j["status"] = status
            });
        if let Err(e) = r {
            if e.code != 404 {
                eprintln!("stand-in job controller: status of {name}: {}", e.message);
            }
        }
    }
}

fn finished_at(job: &Value) -> Option<&str> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| (c["type"] == "Failed" || c["type"] == "Complete") && c["status"] == "True")?
        ["lastTransitionTime"]
        .as_str()
}

// ---------------------------------------------------------------------------------------
// The kubelet

fn fault_for(s: &Shared, pod: &Value) -> Option<Fault> {
    let uid = uid_of(pod).to_string();
    if let Some(f) = lock(s).pod_faults.get(&uid) {
        return f.clone();
    }
    let f = find_fault(s, pod);
    lock(s).pod_faults.insert(uid, f.clone());
    f
}

fn find_fault(s: &Shared, pod: &Value) -> Option<Fault> {
    let faults = lock(s).faults.clone();
    if faults.is_empty() {
        return None;
    }
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    // Pod → its Job → the Job's owner ImportJob → spec.source.fileName.
    let job_name = pod["metadata"]["ownerReferences"][0]["name"].as_str()?;
    let job = s.double.get_opt(&JOBS, ns, job_name)?;
    let ij_name = job["metadata"]["ownerReferences"][0]["name"].as_str()?;
    let ij = s
        .double
        .get_opt(&crate::kube_double::IMPORTJOBS, ns, ij_name)?;
    let file = ij["spec"]["source"]["fileName"].as_str()?;
    faults
        .into_iter()
        .find(|f| f.file_name == file)
        .map(|f| f.fault)
}

/// Whether an image reference parses (`name[:tag][@digest]`, lowercase repository path).
fn is_image_reference(image: &str) -> bool {
    let name = image.split('@').next().unwrap_or("");
    let (repo, tag) = match name.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, Some(t)),
        _ => (name, None),
    };
    !repo.is_empty()
        && repo.split('/').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c) || c == ':'
                })
        })
        && tag.is_none_or(|t| {
            !t.is_empty()
                && t.len() <= 128
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        })
}

fn set_pod_status(s: &Shared, pod: &Value, f: impl FnOnce(&mut Value)) {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    if let Err(e) = s
        .double
        .modify(&PODS, ns, name_of(pod), Sub::Status, MANAGER, |p| {
            f(&mut p["status"])
        })
    {
        if e.code != 404 {
            eprintln!(
                "stand-in kubelet: status of {}: {}",
                name_of(pod),
                e.message
            );
        }
    }
}

fn waiting(s: &Shared, pod: &Value, reason: &str, message: &str) {
    let container = pod["spec"]["containers"][0].clone();
    let (reason, message) = (reason.to_string(), message.to_string());
    set_pod_status(s, pod, move |st| {
        st["phase"] = "Pending".into();
        st["hostIP"] = "127.0.0.1".into();
        if st["startTime"].is_null() {
            st["startTime"] = now().into();
        }
        st["conditions"] = json!([
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
        ]);
        st["containerStatuses"] = json!([{
            "name": container["name"], "image": container["image"], "imageID": "",
            "ready": false, "restartCount": 0, "started": false,
            "state": {"waiting": {"reason": reason, "message": message}},
        }]);
    });
}

/// The container's environment as the kubelet builds it: `envFrom` first, then `env`
/// (values with `$(VAR)` expanded, `fieldRef`, `secretKeyRef`, `configMapKeyRef`).
fn resolve_env(
    s: &Shared,
    pod: &Value,
    container: &Value,
) -> Result<Vec<(String, String)>, String> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(ek, _)| *ek != k);
        env.push((k, v));
    };
    for src in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = src["prefix"].as_str().unwrap_or("");
        if let Some(name) = src["configMapRef"]["name"].as_str() {
            match s.double.get_opt(&crate::kube_double::CONFIGMAPS, ns, name) {
                Some(cm) => {
                    for (k, v) in cm["data"].as_object().into_iter().flatten() {
                        set(
                            &mut env,
                            format!("{prefix}{k}"),
                            v.as_str().unwrap_or("").into(),
                        );
                    }
                }
                None if src["configMapRef"]["optional"] == true => {}
                None => return Err(format!("configmap \"{name}\" not found")),
            }
        }
        if let Some(name) = src["secretRef"]["name"].as_str() {
            match secret_data(s, ns, name) {
                Some(data) => {
                    for (k, v) in data {
                        set(&mut env, format!("{prefix}{k}"), v);
                    }
                }
                None if src["secretRef"]["optional"] == true => {}
                None => return Err(format!("secret \"{name}\" not found")),
            }
        }
    }
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or("").to_string();
        let value = if let Some(v) = e["value"].as_str() {
            expand(v, &env)
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.namespace" => ns.to_string(),
                "metadata.name" => name_of(pod).to_string(),
                "metadata.uid" => uid_of(pod).to_string(),
                "spec.nodeName" => NODE.to_string(),
                "spec.serviceAccountName" => pod["spec"]["serviceAccountName"]
                    .as_str()
                    .unwrap_or("")
                    .into(),
                "status.podIP" | "status.hostIP" => "127.0.0.1".into(),
                other => return Err(format!("unsupported fieldRef {other:?}")),
            }
        } else if let Some(r) = e["valueFrom"].get("secretKeyRef") {
            let (sname, key) = (
                r["name"].as_str().unwrap_or(""),
                r["key"].as_str().unwrap_or(""),
            );
            match secret_data(s, ns, sname) {
                Some(data) => match data.get(key) {
                    Some(v) => v.clone(),
                    None if r["optional"] == true => continue,
                    None => return Err(format!("couldn't find key {key} in Secret {ns}/{sname}")),
                },
                None if r["optional"] == true => continue,
                None => return Err(format!("secret \"{sname}\" not found")),
            }
        } else if let Some(r) = e["valueFrom"].get("configMapKeyRef") {
            let (cname, key) = (
                r["name"].as_str().unwrap_or(""),
                r["key"].as_str().unwrap_or(""),
            );
            match s.double.get_opt(&crate::kube_double::CONFIGMAPS, ns, cname) {
                Some(cm) => match cm["data"][key].as_str() {
                    Some(v) => v.to_string(),
                    None if r["optional"] == true => continue,
                    None => {
                        return Err(format!("couldn't find key {key} in ConfigMap {ns}/{cname}"))
                    }
                },
                None if r["optional"] == true => continue,
                None => return Err(format!("configmap \"{cname}\" not found")),
            }
        } else {
            String::new()
        };
        set(&mut env, name, value);
    }
    Ok(env)
}

fn secret_data(s: &Shared, ns: &str, name: &str) -> Option<HashMap<String, String>> {
    let secret = s.double.get_opt(&crate::kube_double::SECRETS, ns, name)?;
    let typed: k8s_openapi::api::core::v1::Secret = serde_json::from_value(secret).ok()?;
    Some(
        typed
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect(),
    )
}

/// `$(VAR)` references to earlier variables, as the kubelet expands them.
fn expand(v: &str, env: &[(String, String)]) -> String {
    let mut out = v.to_string();
    for (k, val) in env {
        out = out.replace(&format!("$({k})"), val);
    }
    out
}

/// The container's memory limit in bytes (binary and decimal suffixes); none: unlimited.
fn memory_limit(container: &Value) -> u64 {
    let Some(q) = container["resources"]["limits"]["memory"].as_str() else {
        return u64::MAX;
    };
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    let (n, f) = units
        .iter()
        .find_map(|(u, f)| q.strip_suffix(u).map(|n| (n, *f)))
        .unwrap_or((q, 1));
    n.parse::<u64>().map(|n| n * f).unwrap_or(u64::MAX)
}

/// `Fault::DatabaseRefuses`: the first pods of the import get a `DATABASE_URL` on a port
/// where nothing listens.
fn refuse_database(
    s: &Shared,
    pod: &Value,
    fault: &Option<Fault>,
    mut env: Vec<(String, String)>,
) -> Vec<(String, String)> {
    let Some(Fault::DatabaseRefuses { times }) = fault else {
        return env;
    };
    let key = pod["metadata"]["ownerReferences"][0]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut st = lock(s);
    let n = st.refused.entry(key).or_insert(0);
    if *n >= *times {
        return env;
    }
    *n += 1;
    for (k, v) in env.iter_mut() {
        if k == "DATABASE_URL" {
            // postgres://user:password@host:port/db → the same on 127.0.0.1:1.
            if let (Some(at), Some(slash)) = (v.rfind('@'), v.rfind('/')) {
                if slash > at {
                    *v = format!("{}127.0.0.1:1{}", &v[..=at], &v[slash..]);
                }
            }
        }
    }
    env
}

fn sync_pod(s: &Arc<Shared>, pod: &Value) {
    let uid = uid_of(pod).to_string();
    let ns = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = name_of(pod).to_string();
    if is_deleting(pod) {
        let mut st = lock(s);
        if let Some(r) = st.running.get_mut(&uid) {
            if !r.terminating {
                r.terminating = true;
                let _ = r.signals.send(Signal::Term);
                // Escalate to SIGKILL after the grace period.
                let grace = pod["metadata"]["deletionGracePeriodSeconds"]
                    .as_u64()
                    .unwrap_or(30);
                let signals = r.signals.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(grace)).await;
                    let _ = signals.send(Signal::Kill);
                });
            }
            return;
        }
        drop(st);
        // Nothing runs (finished, waiting, or never started): finish the deletion.
        let _ = s.double.delete(&PODS, &ns, &name, &DeleteOpts::now());
        return;
    }
    if matches!(phase(pod), "Succeeded" | "Failed") || lock(s).started.contains(&uid) {
        return;
    }
    let container = pod["spec"]["containers"][0].clone();
    let image = container["image"].as_str().unwrap_or("").to_string();
    let fault = fault_for(s, pod);
    if let Some(Fault::Unschedulable(message)) = &fault {
        if !has_condition(pod, "PodScheduled", "False") {
            let message = message.clone();
            set_pod_status(s, pod, move |st| {
                st["phase"] = "Pending".into();
                st["conditions"] = json!([{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": message, "lastTransitionTime": now(),
                }]);
            });
        }
        return;
    }
    let image_dir = s.images.get(&image).cloned();
    let current = pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if !is_image_reference(&image) {
        if current != "InvalidImageName" {
            waiting(
                s,
                pod,
                "InvalidImageName",
                &format!("Failed to apply default image tag \"{image}\": couldn't parse image name \"{image}\": invalid reference format"),
            );
        }
        return;
    }
    if image_dir.is_none() && container["imagePullPolicy"] == "Never" {
        if current != "ErrImageNeverPull" {
            waiting(
                s,
                pod,
                "ErrImageNeverPull",
                &format!("Container image \"{image}\" is not present with pull policy of Never"),
            );
        }
        return;
    }
    let first_seen = *lock(s)
        .pull_attempted
        .entry(uid.clone())
        .or_insert_with(Instant::now);
    let pull_fails = match &fault {
        Some(Fault::ImagePullBackOff) => true,
        Some(Fault::ImagePullBackOffFor(d)) => first_seen.elapsed() < *d,
        _ => false,
    };
    if image_dir.is_none() || pull_fails {
        let first = first_seen;
        let message = format!("Back-off pulling image \"{image}\"");
        let current = pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or("");
        if first.elapsed() < Duration::from_millis(500) {
            if current != "ErrImagePull" {
                waiting(
                    s,
                    pod,
                    "ErrImagePull",
                    &format!("failed to pull and unpack image \"{image}\": not found"),
                );
            }
        } else if current != "ImagePullBackOff" {
            waiting(s, pod, "ImagePullBackOff", &message);
        }
        return;
    }
    if let Some(Fault::SlowStart(delay)) = &fault {
        let first = *lock(s)
            .pull_attempted
            .entry(uid.clone())
            .or_insert_with(Instant::now);
        if first.elapsed() < *delay {
            if pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                != "ContainerCreating"
            {
                waiting(s, pod, "ContainerCreating", "");
            }
            return;
        }
    }
    let env = match resolve_env(s, pod, &container) {
        Ok(env) => refuse_database(s, pod, &fault, env),
        Err(why) => {
            if pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"] != why.as_str()
            {
                waiting(s, pod, "CreateContainerConfigError", &why);
            }
            return;
        }
    };
    let command: Vec<String> = container["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(container["args"].as_array().into_iter().flatten())
        .filter_map(|a| a.as_str().map(|a| expand(a, &env)))
        .collect();
    let Some((program, args)) = command.split_first() else {
        waiting(s, pod, "CreateContainerError", "no command");
        return;
    };
    let program = if program.contains('/') {
        PathBuf::from(program)
    } else {
        image_dir.expect("checked").join(program)
    };
    lock(s).started.insert(uid.clone());
    // The service-account token, only where the pod spec mounts it (the default).
    let mut env = env;
    if pod["spec"]["automountServiceAccountToken"] != false {
        let account = pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        if let Some(kubeconfig) = s.accounts.get(account) {
            env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
        }
    }
    lock(s).envs.insert(name.clone(), env.clone());
    let log_path = s.logs.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(args)
        .env_clear()
        .envs(s.extra_env.iter().cloned())
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            waiting(
                s,
                pod,
                "RunContainerError",
                &format!("{}: {e}", program.display()),
            );
            return;
        }
    };
    let pid = child.id();
    let started_at = now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    lock(s).running.insert(
        uid.clone(),
        Running {
            signals: tx.clone(),
            pid,
            terminating: false,
        },
    );
    let container_id = format!("standin://{}", pid.unwrap_or(0));
    {
        let (container, started_at, container_id) =
            (container.clone(), started_at.clone(), container_id.clone());
        set_pod_status(s, pod, move |st| {
            st["phase"] = "Running".into();
            st["hostIP"] = "127.0.0.1".into();
            st["podIP"] = "127.0.0.1".into();
            st["startTime"] = started_at.clone().into();
            st["conditions"] = json!([
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": "True"},
                {"type": "Ready", "status": "True"},
            ]);
            st["containerStatuses"] = json!([{
                "name": container["name"], "image": container["image"],
                "imageID": format!("{}@sha256:stand-in", container["image"].as_str().unwrap_or("")),
                "containerID": container_id, "ready": true, "restartCount": 0, "started": true,
                "state": {"running": {"startedAt": started_at}},
            }]);
        });
    }
    let oom_after = match fault {
        Some(Fault::OomKilled { after }) => Some(after),
        Some(Fault::OomKilledBelow { bytes, after }) if memory_limit(&container) < bytes => {
            Some(after)
        }
        _ => None,
    };
    if let Some(after) = oom_after {
        let (s2, uid2, tx2) = (s.clone(), uid.clone(), tx.clone());
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            lock(&s2).oom.insert(uid2);
            let _ = tx2.send(Signal::Kill);
        });
    }
    let s = s.clone();
    let pod = pod.clone();
    tokio::spawn(async move {
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                Some(sig) = rx.recv() => match sig {
                    Signal::Kill => { let _ = child.start_kill(); }
                    Signal::Term => {
                        if let Some(pid) = child.id() {
                            let _ = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
                        }
                    }
                },
            }
        };
        let code = match status {
            Ok(st) => {
                use std::os::unix::process::ExitStatusExt;
                st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(9))
            }
            Err(_) => 128 + 9,
        };
        let oom = lock(&s).oom.remove(&uid);
        let reason = if oom {
            "OOMKilled"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let finished_at = now();
        set_pod_status(&s, &pod, move |st| {
            st["phase"] = if code == 0 { "Succeeded" } else { "Failed" }.into();
            // A DisruptionTarget condition (an eviction) stays.
            let disruption: Vec<Value> = st["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["type"] == "DisruptionTarget")
                .cloned()
                .collect();
            st["conditions"] = json!([
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": "False", "reason": if code == 0 { "PodCompleted" } else { "PodFailed" }},
                {"type": "Ready", "status": "False", "reason": if code == 0 { "PodCompleted" } else { "PodFailed" }},
            ]);
            if let Some(cs) = st["conditions"].as_array_mut() {
                cs.extend(disruption);
            }
            if let Some(cs) = st["containerStatuses"][0].as_object_mut() {
                cs.insert("ready".into(), false.into());
                cs.insert("started".into(), false.into());
                cs.insert(
                    "state".into(),
                    json!({"terminated": {
                        "exitCode": code, "reason": reason, "startedAt": started_at,
                        "finishedAt": finished_at, "containerID": container_id,
                    }}),
                );
            }
        });
        let terminating = lock(&s).running.remove(&uid).is_some_and(|r| r.terminating);
        if terminating
            || s.double
                .get_opt(&PODS, &ns, &name)
                .is_some_and(|p| is_deleting(&p))
        {
            let _ = s.double.delete(&PODS, &ns, &name, &DeleteOpts::now());
        }
    });
}
