//! `rmi`: remove images by name or id, every image (`--all`), or the ones no container
//! uses (`--prune`).

use std::collections::HashSet;

use k8s_cri::v1::{Image, RemoveImageRequest};

use crate::cli::RmiArgs;
use crate::client::{Connection, CtlError, ImageClient};
use crate::commands::images::{image_matches, list_all, status_of};
use crate::commands::pull::image_spec;
use crate::commands::{list_containers, Failures};
use crate::output;

pub async fn run(conn: &Connection, args: &RmiArgs) -> anyhow::Result<()> {
    let mut client = conn.long().images().await?;
    let mut failures = Failures::default();
    if args.all || args.prune {
        let mut images = list_all(conn, &mut client).await?;
        if args.prune {
            let in_use = images_in_use(conn).await?;
            images.retain(|image| !in_use.iter().any(|name| names_image(name, image)));
        }
        for image in &images {
            failures.record(remove(conn, &mut client, image).await)?;
        }
    } else {
        if args.images.is_empty() {
            return Err(CtlError::Usage("name the images to remove, or use --prune or --all".to_string()).into());
        }
        for name in &args.images {
            let removed = match status_of(conn, &mut client, name).await {
                Ok(status) => match status.image {
                    Some(image) => remove(conn, &mut client, &image).await,
                    None => Ok(()),
                },
                Err(error) => Err(error),
            };
            failures.record(removed)?;
        }
    }
    Ok(failures.finish()?)
}

/// Removes `image` with all its names, and says so per name (as crictl).
async fn remove(conn: &Connection, client: &mut ImageClient, image: &Image) -> Result<(), CtlError> {
    let request = RemoveImageRequest { image: Some(image_spec(&image.id)) };
    client.remove_image(request).await.map_err(|s| conn.error(&format!("remove image {}", image.id), s))?;
    let names = if image.repo_tags.is_empty() { vec![image.id.clone()] } else { image.repo_tags.clone() };
    output::print_str(&names.iter().map(|name| format!("Deleted: {name}\n")).collect::<String>());
    Ok(())
}

/// Whether `name` (a container's image or image ref) is `image`: its id, a tag, a repo
/// digest, or a short name of it.
fn names_image(name: &str, image: &Image) -> bool {
    name == image.id
        || image.repo_tags.iter().any(|tag| tag == name)
        || image.repo_digests.iter().any(|digest| digest == name)
        || image_matches(image, name)
}

/// Ids (and names) of the images containers were created from, running or not.
async fn images_in_use(conn: &Connection) -> Result<HashSet<String>, CtlError> {
    let mut rt = conn.runtime().await?;
    let containers = list_containers(conn, &mut rt).await?;
    let mut in_use = HashSet::new();
    for container in containers {
        in_use.insert(container.image_ref.clone());
        if let Some(spec) = container.image {
            in_use.insert(spec.image);
        }
    }
    Ok(in_use)
}
