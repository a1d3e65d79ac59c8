//! `version`, `info` and `imagefsinfo`: what berthd is and how it is doing.

use k8s_cri::v1::{ImageFsInfoRequest, StatusRequest, VersionRequest};

use crate::cli::{ImagefsinfoArgs, InfoArgs};
use crate::client::Connection;
use crate::output::{self, human_size, Table};

pub async fn version(conn: &Connection) -> anyhow::Result<()> {
    let mut rt = conn.runtime().await?;
    let request = VersionRequest { version: "v1".to_string() };
    let version = rt.version(request).await.map_err(|s| conn.error("version", s))?.into_inner();
    output::print_str(&format!(
        "Version:  {}\nRuntimeName:  {}\nRuntimeVersion:  {}\nRuntimeApiVersion:  {}\n",
        version.version, version.runtime_name, version.runtime_version, version.runtime_api_version
    ));
    Ok(())
}

pub async fn info(conn: &Connection, args: &InfoArgs) -> anyhow::Result<()> {
    let mut rt = conn.runtime().await?;
    let status = rt.status(StatusRequest { verbose: true }).await.map_err(|s| conn.error("status", s))?.into_inner();
    let extra = [
        ("runtime_handlers", serde_json::to_value(status.runtime_handlers.clone())?),
        ("features", serde_json::to_value(status.features)?),
    ];
    let doc = output::status_doc(&status.status, &status.info, &extra)?;
    output::print_status_docs(vec![doc], args.output)
}

pub async fn imagefsinfo(conn: &Connection, args: &ImagefsinfoArgs) -> anyhow::Result<()> {
    let mut images = conn.images().await?;
    let response =
        images.image_fs_info(ImageFsInfoRequest {}).await.map_err(|s| conn.error("image fs info", s))?.into_inner();
    if output::print_list_doc(&response, args.output)? {
        return Ok(());
    }
    let mut table = Table::new(&["KIND", "MOUNTPOINT", "USED", "INODES"]);
    let kinds = [("images", &response.image_filesystems), ("containers", &response.container_filesystems)];
    for (kind, filesystems) in kinds {
        for fs in filesystems {
            table.row(vec![
                kind.to_string(),
                fs.fs_id.as_ref().map(|id| id.mountpoint.clone()).unwrap_or_default(),
                fs.used_bytes.as_ref().map(|b| human_size(b.value)).unwrap_or_default(),
                fs.inodes_used.as_ref().map(|i| i.value.to_string()).unwrap_or_default(),
            ]);
        }
    }
    table.print();
    Ok(())
}
