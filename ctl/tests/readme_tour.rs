//! The README cannot rot: its top is the two commands, and every command of its berthctl
//! tour (the fenced blocks marked ```` ```sh tour ````) runs here, in order, against a real
//! berthd with a pod network and the demo images behind the `docker.io` mirror, as
//! `hack/up` sets them up.
//!
//! The tour publishes port 8080 for people; the test replaces it with a free port (tests
//! never assume a port is free). `berthctl` is the binary cargo built for this test, first
//! on `PATH`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_tests::network::{cache_dir, PluginSet, TestNetwork};
use berth_tests::{fixtures, Berthd};
use common::{berthctl_bin, run_with_timeout, Run};

/// The port the README publishes, replaced by a free one.
const README_HOST_PORT: &str = "8080";

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The lines of every fenced block whose info string is `sh tour`, in order, without
/// blank lines and `#` comment lines.
fn tour_commands(readme: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_tour = false;
    for line in readme.lines() {
        let trimmed = line.trim();
        if let Some(info) = trimmed.strip_prefix("```") {
            in_tour = !in_tour && info.split_whitespace().collect::<Vec<_>>() == ["sh", "tour"];
            continue;
        }
        if in_tour && !trimmed.is_empty() && !trimmed.starts_with('#') {
            commands.push(trimmed.to_string());
        }
    }
    commands
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

#[test]
fn readme_opens_with_the_two_commands() {
    let readme = readme();
    let first_block: Vec<&str> = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```sh block")
        .lines()
        .map(|line| line.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(first_block, ["hack/up", "hack/test"], "the README's first block is the two commands");
    let commands = tour_commands(&readme);
    assert!(commands.iter().any(|c| c.contains("-p 8080:80")), "the tour publishes a port: {commands:?}");
    for step in ["berthctl run", "curl", "berthctl exec", "berthctl logs", "berthctl stop", "berthctl rmp"] {
        assert!(commands.iter().any(|c| c.starts_with(step)), "the tour has `{step}`: {commands:?}");
    }
}

#[tokio::test]
async fn readme_tour_runs() {
    let registry = fixtures::shared_registry();
    fixtures::push_std(registry, "httpd");
    // Dropped after berthd (declared first): the bridge goes once every pod is gone.
    let network = TestNetwork::new(PluginSet::Builtin);
    let config = format!("{}\n{}", fixtures::mirror_config("docker.io", registry), network.config_toml());
    let berthd = Berthd::start_with(&config).await;
    let port = free_port().to_string();
    let bin_dir: PathBuf = berthctl_bin().parent().expect("bin dir").to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());

    let commands = tour_commands(&readme());
    let mut results: Vec<(String, Run)> = Vec::new();
    for readme_command in &commands {
        let command_line = readme_command.replace(README_HOST_PORT, &port);
        let mut command = Command::new("sh");
        command
            .args(["-c", &command_line])
            .env("PATH", &path)
            .env("BERTH_ENDPOINT", format!("unix://{}", berthd.socket().display()))
            .env("BERTHCTL_POD_LOG_DIR", berthd.base_dir().join("pod-logs"))
            .env_remove("BERTHCTL_PROGRESS");
        let run = run_with_timeout(command, Duration::from_secs(120));
        let failed = run.code != 0;
        results.push((command_line, run));
        if failed {
            break;
        }
    }
    // Whatever the outcome, remove what the tour made before checking it.
    let cleanup = Command::new(berthctl_bin())
        .args(["-r", &format!("unix://{}", berthd.socket().display()), "rmp", "-f", "-a"])
        .output()
        .expect("berthctl rmp -a");
    let report: String = results
        .iter()
        .map(|(command, run)| format!("$ {command}\n[exit {}]\n{}{}\n", run.code, run.stdout, run.stderr))
        .collect();
    eprintln!("{report}");
    assert!(cleanup.status.success(), "rmp -f -a: {}", String::from_utf8_lossy(&cleanup.stderr));

    assert_eq!(results.len(), commands.len(), "a tour command failed:\n{report}");
    for (command, run) in &results {
        assert_eq!(run.code, 0, "`{command}` failed:\n{report}");
    }
    let output_of = |prefix: &str| -> &Run {
        &results.iter().find(|(command, _)| command.starts_with(prefix)).unwrap_or_else(|| panic!("no `{prefix}`")).1
    };
    assert!(output_of("berthctl run -d").stdout.trim().len() == 64, "run -d prints the container id:\n{report}");
    assert!(
        output_of("curl").stdout.contains("berth httpd test image"),
        "the page came through the hostPort:\n{report}"
    );
    assert!(output_of("berthctl exec").stdout.contains("index.html"), "{report}");
    assert!(output_of("berthctl logs").stderr.contains("response:200"), "httpd logged the request:\n{report}");
    assert_eq!(output_of("berthctl run --rm").stdout, "hello\n", "{report}");
    berthd.assert_no_runtime_leaks();
    network.assert_clean(&cache_dir(berthd.root()));
}
