//! berthctl end to end: the built binary against a real berthd (with a local registry as
//! docker.io's mirror), checked by its stdout, stderr and exit code.
//!
//! Three flows, each with its own berthd: the error paths that need no daemon, images,
//! and pods with containers (both config formats, every output format, unknown ids).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_tests::{fixtures, Berthd};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_berthctl");

/// berthctl pointed at one socket.
struct Ctl {
    endpoint: String,
}

impl Ctl {
    fn new(socket: &Path) -> Ctl {
        Ctl { endpoint: format!("unix://{}", socket.display()) }
    }

    fn run(&self, args: &[&str]) -> Output {
        let output = Command::new(BIN)
            .arg("--runtime-endpoint")
            .arg(&self.endpoint)
            .args(args)
            .env_remove("BERTH_ENDPOINT")
            .env_remove("CONTAINER_RUNTIME_ENDPOINT")
            .output()
            .expect("run berthctl");
        eprintln!(
            "$ berthctl {}\n  -> {:?}\n{}{}",
            args.join(" "),
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// stdout of a run that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(output.status.success(), "berthctl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).expect("utf-8 stdout")
    }

    /// stderr of a run that must fail with `code`.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let output = self.run(args);
        assert_eq!(output.status.code(), Some(code), "berthctl {args:?}: wrong exit code");
        String::from_utf8(output.stderr).expect("utf-8 stderr")
    }

    fn json(&self, args: &[&str]) -> Value {
        let text = self.ok(args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("berthctl {args:?} printed no JSON ({e}): {text}"))
    }

    /// The lines of a `-q` listing.
    fn ids(&self, args: &[&str]) -> Vec<String> {
        self.ok(args).lines().map(str::to_string).collect()
    }
}

fn berthctl_env(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).env_remove("BERTH_ENDPOINT").env_remove("CONTAINER_RUNTIME_ENDPOINT");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run berthctl")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config file");
    path
}

async fn berthd_with_registry() -> Berthd {
    let registry = fixtures::shared_registry();
    Berthd::start_with(&fixtures::mirror_config("docker.io", registry)).await
}

#[test]
fn errors_help_and_completion_without_berthd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("berth.sock");
    let ctl = Ctl::new(&missing);

    // Daemon down: the human error with the next step, exit code 3.
    let message = ctl.fails(&["version"], 3);
    assert!(
        message.contains(&format!("berthd is not running at {}: start it with `hack/up`", missing.display())),
        "{message}"
    );
    ctl.fails(&["ps", "-a"], 3);
    // The endpoint from the environment: BERTH_ENDPOINT before CONTAINER_RUNTIME_ENDPOINT.
    let from_env = berthctl_env(&[("CONTAINER_RUNTIME_ENDPOINT", "unix:///nonexistent/cri.sock")], &["pods"]);
    assert_eq!(from_env.status.code(), Some(3));
    assert!(stderr(&from_env).contains("/nonexistent/cri.sock"), "{}", stderr(&from_env));
    let both = berthctl_env(
        &[
            ("CONTAINER_RUNTIME_ENDPOINT", "unix:///nonexistent/cri.sock"),
            ("BERTH_ENDPOINT", "/nonexistent/berth.sock"),
        ],
        &["pods"],
    );
    assert!(stderr(&both).contains("/nonexistent/berth.sock"), "{}", stderr(&both));
    let default = berthctl_env(&[], &["--help"]);
    assert!(String::from_utf8_lossy(&default.stdout).contains("unix:///run/berth/berth.sock"));

    // Usage errors: exit code 2.
    ctl.fails(&["ps", "--bogus"], 2);
    ctl.fails(&["nosuchcommand"], 2);
    ctl.fails(&["inspect"], 2);
    ctl.fails(&["pods", "-o", "xml"], 2);
    assert!(ctl.fails(&["exec", "-it", "web", "sh"], 2).contains("streaming"));
    assert!(ctl.fails(&["runp", "/nonexistent/pod.json"], 2).contains("cannot read config file"));
    let bad = write(dir.path(), "bad.json", "{\"metadata\": {\"name\": 5}}");
    assert!(ctl.fails(&["runp", bad.to_str().unwrap()], 2).contains("bad.json"));
    ctl.fails(&["-r", "tcp://127.0.0.1:1", "version"], 2);

    // Help with an example for every command, exit codes documented.
    let help = ctl.ok(&["--help"]);
    assert!(help.contains("Exit codes:") && help.contains("berthd is not reachable"), "{help}");
    for command in [
        "version",
        "info",
        "pull",
        "images",
        "inspecti",
        "rmi",
        "imagefsinfo",
        "runp",
        "pods",
        "inspectp",
        "stopp",
        "rmp",
        "create",
        "start",
        "ps",
        "inspect",
        "stop",
        "rm",
        "exec",
        "logs",
        "run",
        "completion",
    ] {
        let help = ctl.ok(&[command, "--help"]);
        assert!(help.contains("Example:\n  berthctl"), "`{command} --help` has no example: {help}");
    }

    // Completions.
    for shell in ["bash", "zsh", "fish"] {
        let script = ctl.ok(&["completion", shell]);
        assert!(script.contains("berthctl") && script.contains("inspectp"), "{shell} completion");
    }
    ctl.fails(&["completion", "tcsh"], 2);
}

#[tokio::test]
async fn images_flow() {
    let berthd = berthd_with_registry().await;
    let ctl = Ctl::new(berthd.socket());

    let version = ctl.ok(&["version"]);
    assert!(version.contains("RuntimeName:  berth") && version.contains("RuntimeApiVersion:  v1"), "{version}");
    let info = ctl.json(&["info"]);
    assert!(info["status"]["conditions"].is_array(), "{info}");
    // as crictl: verbose info values are parsed JSON beside the status
    assert!(info["config"].is_object(), "berthd's config as JSON: {info}");
    assert!(info["runtimeHandlers"].is_array(), "{info}");
    assert!(ctl.ok(&["info", "-o", "yaml"]).contains("conditions:"));

    // pull by short name through the mirror
    let pulled = ctl.ok(&["pull", "busybox"]);
    assert!(pulled.starts_with("Image is up to date for sha256:"), "{pulled}");
    let id = ctl.ids(&["images", "-q"]);
    assert_eq!(id.len(), 1);
    assert!(id[0].starts_with("sha256:"));
    assert_eq!(ctl.ok(&["pull", "-q", "busybox"]).trim(), id[0]);

    // images: table, filter, json, yaml
    let table = ctl.ok(&["images"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("IMAGE") && header.contains("TAG") && header.contains("IMAGE ID") && header.contains("SIZE")
    );
    let row = lines.next().expect("a row for busybox");
    assert!(row.starts_with("docker.io/library/busybox") && row.contains("latest"), "{row}");
    assert!(row.contains(&id[0][7..20]), "the truncated id: {row}");
    assert!(!row.contains(&id[0][7..]), "ids are truncated without --no-trunc");
    assert!(ctl.ok(&["images", "--no-trunc"]).contains(&id[0]));
    assert!(ctl.ok(&["images", "--digests"]).contains("DIGEST"));
    assert_eq!(ctl.ids(&["images", "-q", "busybox"]), id);
    assert_eq!(ctl.ids(&["images", "-q", "busybox:latest"]), id);
    assert!(ctl.ids(&["images", "-q", "httpd"]).is_empty());
    let listed = ctl.json(&["images", "-o", "json"]);
    assert_eq!(listed["images"][0]["id"], id[0].as_str());
    assert_eq!(listed["images"][0]["repoTags"][0], "docker.io/library/busybox:latest");
    assert!(ctl.ok(&["images", "-o", "yaml"]).contains("repoTags:"));

    // inspecti
    let status = ctl.json(&["inspecti", "busybox"]);
    assert_eq!(status["status"]["id"], id[0].as_str(), "{status}");
    assert_eq!(status["status"]["repoTags"][0], "docker.io/library/busybox:latest");
    assert!(ctl.ok(&["inspecti", "-o", "yaml", &id[0]]).contains("repoTags:"));
    assert!(ctl.fails(&["inspecti", "nothere"], 4).contains("no image nothere"));

    // imagefsinfo
    let fs = ctl.json(&["imagefsinfo"]);
    assert!(fs["imageFilesystems"][0]["fsId"]["mountpoint"].is_string(), "{fs}");
    assert!(ctl.ok(&["imagefsinfo", "-o", "table"]).contains("MOUNTPOINT"));
    assert!(ctl.ok(&["imagefsinfo", "-o", "yaml"]).contains("imageFilesystems:"));

    // a pull of an image the registry does not have fails, naming it
    let missing = fixtures::reference(fixtures::shared_registry(), "doesnotexist:1.0");
    let message = ctl.fails(&["pull", &missing], 4);
    assert!(message.contains(&missing), "{message}");
    assert!(!message.contains("not running"), "{message}");
    // -r may also follow the command; --timeout comes before it
    let after = berthctl_env(&[], &["--timeout", "20s", "images", "-q", "-r", &ctl.endpoint]);
    assert!(after.status.success(), "{}", stderr(&after));

    // rmi by name, unknown name, --prune, --all
    assert_eq!(ctl.ok(&["rmi", "busybox"]), "Deleted: docker.io/library/busybox:latest\n");
    assert!(ctl.ids(&["images", "-q"]).is_empty());
    ctl.fails(&["rmi", "busybox"], 4);
    ctl.fails(&["rmi"], 2);
    ctl.ok(&["pull", "busybox"]);
    assert!(ctl.ok(&["rmi", "--prune"]).contains("Deleted: docker.io/library/busybox:latest"));
    ctl.ok(&["pull", "busybox"]);
    assert!(ctl.ok(&["rmi", "--all"]).contains("Deleted:"));
    assert!(ctl.ids(&["images", "-q"]).is_empty());

    // berthd gone: exit code 3
    let mut berthd = berthd;
    berthd.stop();
    ctl.fails(&["images"], 3);
    berthd.assert_no_leaks();
}

const POD_JSON: &str = r#"{
  "metadata": {"name": "web", "namespace": "default", "attempt": 1, "uid": "web-uid-1"},
  "log_directory": "LOGDIR/web",
  "labels": {"app": "web"},
  "linux": {}
}"#;

const POD_YAML: &str = "\
metadata:
  name: db
  namespace: berthctl-test
  uid: db-uid-1
log_directory: LOGDIR/db
labels:
  app: db
linux:
  security_context:
    namespace_options:
      pid: 1
";

const CONTAINER_JSON: &str = r#"{
  "metadata": {"name": "box"},
  "image": {"image": "busybox"},
  "command": ["sleep", "3600"],
  "envs": [{"key": "GREETING", "value": "hello"}],
  "labels": {"tier": "front"},
  "log_path": "box.log",
  "linux": {}
}"#;

const CONTAINER_YAML: &str = "\
metadata:
  name: store
image:
  image: busybox
command: [sleep, 3600]
log_path: store.log
linux: {}
";

#[tokio::test]
async fn pods_and_containers_flow() {
    let berthd = berthd_with_registry().await;
    let ctl = Ctl::new(berthd.socket());
    let dir = berthd.base_dir().join("configs");
    std::fs::create_dir_all(&dir).unwrap();
    let logs = berthd.base_dir().join("logs");
    let logs = logs.to_str().unwrap();
    let pod_json = write(&dir, "pod.json", &POD_JSON.replace("LOGDIR", logs));
    let pod_yaml = write(&dir, "pod.yaml", &POD_YAML.replace("LOGDIR", logs));
    let container_json = write(&dir, "container.json", CONTAINER_JSON);
    let container_yaml = write(&dir, "container.yaml", CONTAINER_YAML);
    let path = |p: &PathBuf| p.to_str().unwrap().to_string();

    // runp from JSON and YAML (the log directories are made as kubelet would)
    let web = ctl.ok(&["runp", &path(&pod_json)]).trim().to_string();
    assert_eq!(web.len(), 64, "runp prints the pod id: {web}");
    let db = ctl.ok(&["runp", &path(&pod_yaml)]).trim().to_string();
    assert_eq!(db.len(), 64);
    assert!(Path::new(logs).join("web").is_dir());

    // pods: table, filters, -q, -l, --last, json, yaml
    let table = ctl.ok(&["pods"]);
    let header = table.lines().next().unwrap();
    for column in ["POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT", "RUNTIME"] {
        assert!(header.contains(column), "{header}");
    }
    assert!(table.contains(&web[..13]) && !table.contains(&web), "ids are truncated: {table}");
    assert!(table.lines().any(|l| l.contains("web") && l.contains("Ready") && l.contains("default")), "{table}");
    assert!(ctl.ok(&["pods", "--no-trunc"]).contains(&web));
    assert_eq!(ctl.ids(&["pods", "-q", "--name", "web"]), vec![web.clone()]);
    assert_eq!(ctl.ids(&["pods", "-q", "--namespace", "berthctl-test"]), vec![db.clone()]);
    assert_eq!(ctl.ids(&["pods", "-q", "--label", "app=db"]), vec![db.clone()]);
    assert_eq!(ctl.ids(&["pods", "-q", "--id", &web[..8]]), vec![web.clone()]);
    assert_eq!(ctl.ids(&["pods", "-q", "-l"]), vec![db.clone()]);
    assert_eq!(ctl.ids(&["pods", "-q", "--last", "2"]), vec![db.clone(), web.clone()]);
    assert_eq!(ctl.ids(&["pods", "-q", "--state", "ready"]).len(), 2);
    assert!(ctl.ids(&["pods", "-q", "--state", "notready"]).is_empty());
    ctl.fails(&["pods", "--state", "sleepy"], 2);
    ctl.fails(&["pods", "--label", "novalue"], 2);
    let listed = ctl.json(&["pods", "-o", "json", "--name", "web"]);
    assert_eq!(listed["items"][0]["id"], web.as_str());
    assert_eq!(listed["items"][0]["state"], "SANDBOX_READY");
    assert_eq!(listed["items"][0]["metadata"]["uid"], "web-uid-1");
    assert!(ctl.ok(&["pods", "-o", "yaml"]).contains("state: SANDBOX_READY"));

    // inspectp by id prefix and by name
    let status = ctl.json(&["inspectp", &web[..12]]);
    assert_eq!(status["status"]["id"], web.as_str(), "{status}");
    assert_eq!(status["status"]["state"], "SANDBOX_READY");
    assert_eq!(status["status"]["labels"]["app"], "web");
    assert!(status["info"].is_object(), "berthd's verbose info, parsed: {status}");
    assert!(ctl.ok(&["inspectp", "-o", "yaml", "db"]).contains("name: db"));

    // create (pulling the missing image with --pull), start, ps
    let create = |pod: &str, container: &PathBuf, pod_config: &PathBuf, pull: bool| {
        let mut args = vec!["create".to_string(), pod.to_string(), path(container), path(pod_config)];
        if pull {
            args.push("--pull".to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ctl.ok(&args).trim().to_string()
    };
    // without --pull, a missing image is an error that says how to get it
    let output = ctl.run(&["create", &web, &path(&container_json), &path(&pod_json)]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--pull"), "{}", stderr(&output));
    let box_id = create(&web[..12], &container_json, &pod_json, true);
    assert_eq!(box_id.len(), 64, "create prints the container id: {box_id}");
    assert!(ctl.ids(&["ps", "-q"]).is_empty(), "a created container is not running");
    // --prune keeps the image a container uses
    assert!(!ctl.ok(&["rmi", "--prune"]).contains("Deleted"));
    assert_eq!(ctl.ids(&["images", "-q", "busybox"]).len(), 1);
    let all = ctl.ok(&["ps", "-a"]);
    assert!(all.lines().any(|l| l.contains("box") && l.contains("Created")), "{all}");
    assert_eq!(ctl.ok(&["start", "box"]).trim(), box_id);
    let table = ctl.ok(&["ps"]);
    let header = table.lines().next().unwrap();
    for column in ["CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD ID", "POD"] {
        assert!(header.contains(column), "{header}");
    }
    let row = table.lines().find(|l| l.contains("box")).expect("box in ps");
    assert!(row.starts_with(&box_id[..13]) && row.contains("Running") && row.contains("busybox"), "{row}");
    assert!(row.contains(&web[..13]) && row.trim_end().ends_with("web"), "{row}");
    assert_eq!(ctl.ids(&["ps", "-q", "--name", "box"]), vec![box_id.clone()]);
    assert_eq!(ctl.ids(&["ps", "-q", "--pod", "web"]), vec![box_id.clone()]);
    assert_eq!(ctl.ids(&["ps", "-q", "--state", "running"]), vec![box_id.clone()]);
    assert_eq!(ctl.ids(&["ps", "-q", "--image", "busybox"]), vec![box_id.clone()]);
    assert_eq!(ctl.ids(&["ps", "-q", "--label", "tier=front"]), vec![box_id.clone()]);
    assert!(ctl.ids(&["ps", "-q", "--label", "tier=back"]).is_empty());
    assert_eq!(ctl.ids(&["ps", "-q", "-l"]), vec![box_id.clone()]);
    let listed = ctl.json(&["ps", "-o", "json"]);
    assert_eq!(listed["containers"][0]["state"], "CONTAINER_RUNNING", "{listed}");
    assert_eq!(listed["containers"][0]["podSandboxId"], web.as_str());
    assert!(ctl.ok(&["ps", "-o", "yaml"]).contains("state: CONTAINER_RUNNING"));
    ctl.fails(&["ps", "--state", "sleepy"], 2);

    // inspect
    let status = ctl.json(&["inspect", &box_id[..10]]);
    assert_eq!(status["status"]["state"], "CONTAINER_RUNNING", "{status}");
    assert_eq!(status["status"]["metadata"]["name"], "box");
    assert!(ctl.ok(&["inspect", "-o", "yaml", "box"]).contains("state: CONTAINER_RUNNING"));

    // exec: output, the command's exit code, --timeout, env from the config file
    assert_eq!(ctl.ok(&["exec", "box", "sh", "-c", "echo $GREETING"]), "hello\n");
    assert_eq!(ctl.ok(&["exec", "-s", "--timeout", "5", &box_id[..8], "echo", "-n", "x"]), "x");
    let failed = ctl.run(&["exec", "box", "sh", "-c", "echo oops >&2; exit 7"]);
    assert_eq!(failed.status.code(), Some(7));
    assert_eq!(stderr(&failed), "oops\n");
    assert!(ctl.fails(&["exec", "--timeout", "1", "box", "sleep", "30"], 1).contains("did not finish within"));

    // a second container from YAML in the YAML pod
    let store_id = create(&db, &container_yaml, &pod_yaml, false);
    assert_eq!(ctl.ok(&["start", &store_id]).trim(), store_id);
    assert_eq!(ctl.ids(&["ps", "-q", "--pod", &db]), vec![store_id.clone()]);

    // stop and rm: a running container needs -f
    assert!(ctl.fails(&["rm", "box"], 1).contains("rm -f"));
    assert_eq!(ctl.ok(&["stop", "--timeout", "1", "box"]).trim(), box_id);
    let exited = ctl.ok(&["ps", "-a", "--state", "exited"]);
    assert!(exited.lines().any(|l| l.contains("box") && l.contains("Exited")), "{exited}");
    assert_eq!(ctl.ok(&["rm", "box"]).trim(), box_id);
    assert_eq!(ctl.ok(&["rm", "-f", "store"]).trim(), store_id);
    assert!(ctl.ids(&["ps", "-a", "-q"]).is_empty());

    // unknown ids: exit code 4, also after the others were handled
    for args in [
        &["inspect", "deadbeef"][..],
        &["inspectp", "nothere"],
        &["stopp", "nothere"],
        &["rmp", "nothere"],
        &["start", "nothere"],
        &["stop", "nothere"],
        &["rm", "nothere"],
        &["exec", "nothere", "true"],
    ] {
        assert!(ctl.fails(args, 4).contains("nothere") || args[1] == "deadbeef");
    }
    let mixed = ctl.run(&["inspectp", "web", "nothere"]);
    assert_eq!(mixed.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&mixed.stdout).contains(&web));

    // stopp, rmp (-f for a ready pod), --all
    assert_eq!(ctl.ok(&["stopp", "web"]), format!("Stopped sandbox {web}\n"));
    assert_eq!(ctl.ids(&["pods", "-q", "--state", "notready"]), vec![web.clone()]);
    assert_eq!(ctl.ok(&["rmp", &web[..12]]), format!("Removed sandbox {web}\n"));
    assert!(ctl.fails(&["rmp", "db"], 1).contains("rmp -f"));
    assert_eq!(ctl.ok(&["rmp", "-f", "db"]), format!("Removed sandbox {db}\n"));
    assert!(ctl.ids(&["pods", "-q"]).is_empty());
    ctl.runp_and_remove_all(&pod_json);
    ctl.ok(&["rm", "--all"]);
    ctl.fails(&["rmp"], 2);

    berthd.assert_no_runtime_leaks();
}

impl Ctl {
    /// A pod with a running container, then `rmp --all` removes both.
    fn runp_and_remove_all(&self, pod_config: &Path) {
        let pod = self.ok(&["runp", pod_config.to_str().unwrap()]).trim().to_string();
        assert_eq!(self.ids(&["pods", "-q"]), vec![pod.clone()]);
        // --all leaves a ready pod alone unless -f, as a single rmp does
        assert!(self.fails(&["rmp", "--all"], 1).contains("rmp -f"));
        assert!(self.ok(&["rmp", "--all", "-f"]).contains(&pod));
        assert!(self.ids(&["pods", "-q"]).is_empty());
    }
}
