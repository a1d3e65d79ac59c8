//! `imagegen`: pushes berth's standard test images to a registry.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use berth_imagegen::{push_standard_with, standard_images};

#[derive(Parser)]
#[command(name = "imagegen", about = "Build berth's test images from busybox-static and push them")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Push the standard images (all but `large` unless named or --with-large).
    Push {
        /// Registry address, host:port (plain HTTP).
        #[arg(long)]
        registry: String,
        /// Push only these images (repo or repo:tag); repeatable.
        #[arg(long = "only")]
        only: Vec<String>,
        /// Also push the 212 MB benchmark image `large`.
        #[arg(long)]
        with_large: bool,
        /// Do not also push each image as library/<repo> (docker.io's namespace).
        #[arg(long)]
        no_library: bool,
        /// Basic auth user.
        #[arg(long, requires = "password")]
        user: Option<String>,
        /// Basic auth password.
        #[arg(long, requires = "user")]
        password: Option<String>,
    },
    /// List the standard images.
    List,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::List => {
            for image in standard_images() {
                let note = if image.on_request_only { " (on request only)" } else { "" };
                println!("{:<24} {}{note}", image.reference(), image.description);
            }
            Ok(())
        }
        Command::Push { registry, only, with_large, no_library, user, password } => {
            let images = standard_images();
            for name in &only {
                if !images.iter().any(|i| i.repo == name.as_str() || i.reference() == *name) {
                    bail!("no standard image named {name:?} (see `imagegen list`)");
                }
            }
            let selected = images.iter().filter(|image| {
                if only.is_empty() {
                    with_large || !image.on_request_only
                } else {
                    only.iter().any(|n| image.repo == n.as_str() || image.reference() == *n)
                }
            });
            let auth = user.as_deref().zip(password.as_deref());
            for image in selected {
                let library = format!("library/{}", image.repo);
                let repos: Vec<&str> = if no_library { vec![image.repo] } else { vec![image.repo, &library] };
                let started = std::time::Instant::now();
                let pushed = push_standard_with(&registry, &image.reference(), &repos, auth)
                    .with_context(|| format!("pushing {}", image.reference()))?;
                println!(
                    "{registry}/{} {} {} bytes ({:.1}s){}",
                    image.reference(),
                    pushed.digest,
                    pushed.total_size,
                    started.elapsed().as_secs_f64(),
                    if no_library { String::new() } else { format!(" also as {library}:{}", image.tag) },
                );
            }
            Ok(())
        }
    }
}
