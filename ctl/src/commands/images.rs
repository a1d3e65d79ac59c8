//! `images` and `inspecti`.

use k8s_cri::v1::{Image, ImageStatusRequest, ImageStatusResponse, ListImagesRequest};

use crate::cli::{ImagesArgs, InspectiArgs};
use crate::client::{Connection, CtlError, ImageClient};
use crate::commands::pull::image_spec;
use crate::commands::{internal, Failures};
use crate::output::{self, human_size, short_id, Table};

pub async fn list(conn: &Connection, args: &ImagesArgs) -> anyhow::Result<()> {
    let mut client = conn.images().await?;
    let mut images = list_all(conn, &mut client).await?;
    if let Some(query) = &args.image {
        images.retain(|image| image_matches(image, query));
    }
    images.sort_by(|a, b| a.repo_tags.first().cmp(&b.repo_tags.first()));
    if args.quiet {
        output::print_str(&images.iter().map(|i| format!("{}\n", i.id)).collect::<String>());
        return Ok(());
    }
    let response = k8s_cri::v1::ListImagesResponse { images };
    if output::print_list_doc(&response, args.output)? {
        return Ok(());
    }
    let mut headers = vec!["IMAGE", "TAG"];
    if args.digests {
        headers.push("DIGEST");
    }
    headers.extend(["IMAGE ID", "SIZE"]);
    let mut table = Table::new(&headers);
    for image in &response.images {
        let digest = image.repo_digests.first().and_then(|d| d.split_once('@')).map(|(_, d)| d).unwrap_or("<none>");
        let names: Vec<(String, String)> = if image.repo_tags.is_empty() {
            let repo = image.repo_digests.first().and_then(|d| d.split_once('@')).map(|(r, _)| r).unwrap_or("<none>");
            vec![(repo.to_string(), "<none>".to_string())]
        } else {
            image.repo_tags.iter().map(|tag| split_tag(tag)).collect()
        };
        for (repo, tag) in names {
            let mut row = vec![repo, tag];
            if args.digests {
                row.push(short_id(digest, args.no_trunc));
            }
            row.push(short_id(&image.id, args.no_trunc));
            row.push(human_size(image.size));
            table.row(row);
        }
    }
    table.print();
    Ok(())
}

pub async fn inspect(conn: &Connection, args: &InspectiArgs) -> anyhow::Result<()> {
    let mut client = conn.images().await?;
    let mut statuses = Vec::new();
    let mut failures = Failures::default();
    for image in &args.images {
        let found = match status_of(conn, &mut client, image).await {
            Ok(status) => {
                output::status_doc(&status.image, &status.info, &[]).map(|doc| statuses.push(doc)).map_err(internal)
            }
            Err(error) => Err(error),
        };
        failures.record(found)?;
    }
    output::print_status_docs(statuses, args.output)?;
    Ok(failures.finish()?)
}

/// The verbose ImageStatus of `image`; NotFound when berthd does not have it.
pub async fn status_of(
    conn: &Connection,
    client: &mut ImageClient,
    image: &str,
) -> Result<ImageStatusResponse, CtlError> {
    let request = ImageStatusRequest { image: Some(image_spec(image)), verbose: true };
    let status = client.image_status(request).await.map_err(|s| conn.error(&format!("image {image}"), s))?.into_inner();
    if status.image.is_none() {
        return Err(CtlError::NotFound(format!("no image {image} here: `berthctl pull {image}` fetches it")));
    }
    Ok(status)
}

pub async fn list_all(conn: &Connection, client: &mut ImageClient) -> Result<Vec<Image>, CtlError> {
    let response = client.list_images(ListImagesRequest { filter: None }).await;
    Ok(response.map_err(|s| conn.error("list images", s))?.into_inner().images)
}

/// `repo:tag` split at the tag's colon (not a registry port's).
pub fn split_tag(reference: &str) -> (String, String) {
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => (reference[..name_start + i].to_string(), reference[name_start + i + 1..].to_string()),
        None => (reference.to_string(), "latest".to_string()),
    }
}

/// Whether `image` is what `query` names: an id (prefix), a full reference, or a short
/// name (`busybox` matches `docker.io/library/busybox:latest`), with or without tag.
pub fn image_matches(image: &Image, query: &str) -> bool {
    let id = image.id.strip_prefix("sha256:").unwrap_or(&image.id);
    let query_id = query.strip_prefix("sha256:").unwrap_or(query);
    if query_id.len() >= 4 && id.starts_with(query_id) {
        return true;
    }
    let has_tag = query.rfind(':').is_some_and(|i| !query[i..].contains('/'));
    let (query_repo, query_tag) = split_tag(query);
    image.repo_tags.iter().any(|reference| {
        let (repo, tag) = split_tag(reference);
        let repo_matches = repo == query_repo || repo.ends_with(&format!("/{query_repo}"));
        repo_matches && (!has_tag || tag == query_tag)
    }) || image.repo_digests.iter().any(|d| d == query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_matching() {
        assert_eq!(split_tag("127.0.0.1:5000/busybox:1.0"), ("127.0.0.1:5000/busybox".into(), "1.0".into()));
        assert_eq!(split_tag("127.0.0.1:5000/busybox"), ("127.0.0.1:5000/busybox".into(), "latest".into()));
        let image = Image {
            id: "sha256:abcdef0123".into(),
            repo_tags: vec!["docker.io/library/busybox:latest".into()],
            ..Default::default()
        };
        assert!(image_matches(&image, "busybox"));
        assert!(image_matches(&image, "busybox:latest"));
        assert!(image_matches(&image, "library/busybox"));
        assert!(!image_matches(&image, "busybox:1.0"));
        assert!(!image_matches(&image, "box"));
        assert!(image_matches(&image, "abcdef"));
    }
}
