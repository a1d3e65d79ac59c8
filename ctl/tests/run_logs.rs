//! berthctl `run`, `logs` and `pull` (with progress) against a real berthd and registry,
//! and berth.v1.Progress spoken to directly.

mod common;

use std::time::Duration;

use berth_tests::{fixtures, Berthd, RuntimeEnv};
use common::Ctl;
use k8s_cri::v1::ListPodSandboxRequest;

mod proto {
    tonic::include_proto!("berth.v1");
}

fn ctl(env: &RuntimeEnv) -> Ctl {
    ctl_for(&env.berthd)
}

fn ctl_for(berthd: &Berthd) -> Ctl {
    Ctl::new(berthd.socket(), &berthd.base_dir().join("pod-logs"))
}

async fn pod_count(env: &mut RuntimeEnv) -> usize {
    env.rt.list_pod_sandbox(ListPodSandboxRequest { filter: None }).await.expect("list pods").into_inner().items.len()
}

/// Foreground run: the command's stdout and stderr come back on ours, its exit code is
/// ours, -e/-v/-w/-u reach the container, and --rm leaves no pod and no log directory.
#[tokio::test]
async fn run_foreground_rm_env_volume_workdir_user_and_exit_code() {
    let mut env = RuntimeEnv::start().await;
    let ctl = ctl(&env);
    let shared = tempfile::tempdir().expect("temp dir");
    std::fs::write(shared.path().join("note.txt"), "from the host\n").expect("write note");
    let host_dir = shared.path().to_string_lossy().into_owned();
    let volume = format!("{host_dir}:/data:ro");
    let script = "echo \"greeting=$GREETING\"; pwd; id -u; id -g; cat note.txt; echo to-stderr >&2; \
                  touch /data/x 2>/dev/null || echo read-only; exit 3";
    let run = ctl.run(&[
        "run",
        "--rm",
        "--name",
        "fg",
        "-e",
        "GREETING=hello there",
        "-v",
        &volume,
        "-w",
        "/data",
        "-u",
        "1000:1001",
        &env.busybox,
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(run.code, 3, "the container's exit code: {run:#?}");
    assert_eq!(run.stdout, "greeting=hello there\n/data\n1000\n1001\nfrom the host\nread-only\n", "{run:#?}");
    assert_eq!(run.stderr, "to-stderr\n", "{run:#?}");
    assert_eq!(pod_count(&mut env).await, 0, "--rm removed the pod");
    let leftover: Vec<_> =
        std::fs::read_dir(&ctl.log_dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(leftover.is_empty(), "--rm removed the pod's log directory: {leftover:?}");

    // Without --rm the pod stays, exited, and exit code 0 is 0.
    let run = ctl.run(&["run", "--name", "kept", &env.busybox, "true"]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{run:#?}");
    assert_eq!(pod_count(&mut env).await, 1);

    // A bad flag value is a usage error (2) and makes nothing.
    let run = ctl.run(&["run", "-p", "eighty", &env.busybox, "true"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("-p eighty"), "{run:#?}");
    assert_eq!(pod_count(&mut env).await, 1);
    env.finish().await;
}

/// -d pulls a missing image (progress on stderr), prints the container id; logs then
/// reads its log: --tail, --since, --timestamps, and -f until the container exits.
#[tokio::test]
async fn run_detached_then_logs_tail_since_timestamps_follow() {
    let env = RuntimeEnv::start().await;
    let ctl = ctl(&env);
    // An image this berthd does not have yet, so that run has to pull it.
    let _ = fixtures::push_std(env.registry, "uncompressed");
    let image_missing = env.image("uncompressed:latest");
    // stdout and stderr reach the log through separate pipes: pauses keep the order.
    let script = "echo one; echo two >&2; sleep 0.3; echo three; sleep 3; printf 'late '; echo line";
    let run = ctl.run(&["run", "-d", "--name", "bg", &image_missing, "sh", "-c", script]);
    let id = run.ok();
    let id = id.trim();
    assert_eq!(id.len(), 64, "prints the full container id: {id:?}");

    // Wait for the first lines.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let run = ctl.run(&["logs", "bg"]);
        if run.stdout.contains("three") {
            assert_eq!(run.stdout, "one\nthree\n", "{run:#?}");
            assert_eq!(run.stderr, "two\n", "stderr lines go to stderr: {run:#?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no output: {run:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let tail = ctl.run(&["logs", "--tail", "1", &id[..12]]);
    assert_eq!((tail.stdout.as_str(), tail.stderr.as_str()), ("three\n", ""), "{tail:#?}");
    let stamped = ctl.run(&["logs", "--timestamps", "--tail", "1", "bg"]).ok();
    let (time, text) = stamped.trim_end().split_once(' ').expect("timestamp and text");
    assert!(time.len() >= 20 && time.contains('T'), "{stamped:?}");
    assert_eq!(text, "three");
    let future = ctl.run(&["logs", "--since", "2999-01-01T00:00:00Z", "bg"]);
    assert_eq!((future.code, future.stdout.as_str(), future.stderr.as_str()), (0, "", ""), "{future:#?}");
    let recent = ctl.run(&["logs", "--since", "1h", "bg"]);
    assert_eq!(recent.stdout, "one\nthree\n", "{recent:#?}");

    // -f returns by itself once the container exited, with the last line.
    let started = std::time::Instant::now();
    let follow = ctl.run_for(&["logs", "-f", "bg"], Duration::from_secs(30));
    assert_eq!(follow.code, 0, "{follow:#?}");
    assert_eq!(follow.stdout, "one\nthree\nlate line\n", "{follow:#?}");
    assert!(started.elapsed() < Duration::from_secs(20));

    let missing = ctl.run(&["logs", "no-such-container"]);
    assert_eq!(missing.code, 4, "unknown container: {missing:#?}");
    let bad_since = ctl.run(&["logs", "--since", "yesterday", "bg"]);
    assert_eq!(bad_since.code, 2, "{bad_since:#?}");
    env.finish().await;
}

/// Without a pod network, -p fails before anything is made, and says why.
#[tokio::test]
async fn run_publish_without_pod_network_fails_clearly() {
    let mut env = RuntimeEnv::start().await;
    let ctl = ctl(&env);
    let run = ctl.run(&["run", "-d", "-p", "18080:80", &env.busybox, "true"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("NetworkReady=false") && run.stderr.contains("-p"), "{run:#?}");
    assert_eq!(pod_count(&mut env).await, 0);
    env.finish().await;
}

/// `pull` on a pipe prints plain progress lines on stderr: every layer downloading and
/// done, a summary; a second pull finds every layer present.
#[tokio::test]
async fn pull_prints_plain_progress_lines() {
    // A berthd with nothing pulled: every layer is downloaded.
    let berthd = Berthd::start().await;
    let registry = fixtures::shared_registry();
    let ctl = ctl_for(&berthd);
    let pushed = fixtures::push_std(registry, "multilayer");
    let image = fixtures::reference(registry, "multilayer:latest");
    let run = ctl.run(&["pull", &image]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.starts_with("Image is up to date for sha256:"), "{run:#?}");
    let manifest = &pushed.images[0];
    for digest in &manifest.layer_digests {
        let short = &digest["sha256:".len().."sha256:".len() + 12];
        assert!(run.stderr.contains(&format!("{short}: downloading ")), "layer {short} downloading: {}", run.stderr);
        assert!(run.stderr.contains(&format!("{short}: done: ")), "layer {short} done: {}", run.stderr);
    }
    assert!(
        run.stderr.contains(&format!("pulled {image}: {} layers (0 already present)", manifest.layer_digests.len())),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains('\x1b'), "no terminal escapes on a pipe");

    let again = ctl.run(&["pull", &image]);
    assert_eq!(again.code, 0, "{again:#?}");
    assert_eq!(again.stderr.matches("already present\n").count(), manifest.layer_digests.len(), "{}", again.stderr);
    let quiet = ctl.run(&["pull", "-q", &image]);
    assert_eq!((quiet.stderr.as_str(), quiet.stdout.trim_start().starts_with("sha256:")), ("", true), "{quiet:#?}");
    let missing = ctl.run(&["pull", &fixtures::reference(registry, "no-such-image:1")]);
    assert_eq!(missing.code, 4, "{missing:#?}");
}

/// berth.v1.Progress directly: snapshots end with the image id PullImage would answer,
/// every layer done; an unknown image ends the stream with NotFound.
#[tokio::test]
async fn progress_service_streams_layers_and_the_image_ref() {
    let berthd = Berthd::start().await;
    let registry = fixtures::shared_registry();
    let pushed = fixtures::push_std(registry, "multilayer");
    let channel = berth_tests::cri::connect(berthd.socket()).await.expect("connect");
    let mut client = proto::progress_client::ProgressClient::new(channel);
    let request = proto::PullWithProgressRequest {
        image: fixtures::reference(registry, "multilayer:latest"),
        ..Default::default()
    };
    let mut stream = client.pull_with_progress(request).await.expect("PullWithProgress").into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.expect("stream") {
        events.push(event);
    }
    let last = events.last().expect("events");
    let manifest = &pushed.images[0];
    assert_eq!(last.image_ref, manifest.config_digest, "the last event names the image id");
    assert!(events[..events.len() - 1].iter().all(|e| e.image_ref.is_empty()), "only the last event has the ref");
    let mut digests: Vec<&str> = last.layers.iter().map(|l| l.digest.as_str()).collect();
    digests.sort();
    let mut expected: Vec<&str> = manifest.layer_digests.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(digests, expected);
    for layer in &last.layers {
        assert_eq!(layer.state, proto::LayerState::Done as i32, "{layer:?}");
        assert_eq!(layer.bytes_done, layer.bytes_total, "{layer:?}");
        assert!(layer.bytes_total > 0);
    }
    let request = proto::PullWithProgressRequest {
        image: fixtures::reference(registry, "no-such-image:1"),
        ..Default::default()
    };
    let status = match client.pull_with_progress(request).await {
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("stream ended without an error"),
                    Err(status) => break status,
                }
            }
        }
        Err(status) => status,
    };
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
}
