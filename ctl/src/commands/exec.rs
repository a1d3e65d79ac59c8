//! `exec`: ExecSync; the command's output goes to ours, its exit code becomes ours.

use std::io::Write;

use k8s_cri::v1::ExecSyncRequest;

use crate::cli::ExecArgs;
use crate::client::{Connection, CtlError};
use crate::commands::resolve_container;

pub async fn run(conn: &Connection, args: &ExecArgs) -> anyhow::Result<i32> {
    if args.interactive || args.tty {
        return Err(CtlError::Usage(
            "interactive exec (-i/-t) needs CRI streaming, which berth does not serve yet: \
             run `berthctl exec CONTAINER CMD...` without -i/-t"
                .to_string(),
        )
        .into());
    }
    if args.timeout < 0 {
        return Err(CtlError::Usage("--timeout must be 0 (no limit) or more seconds".to_string()).into());
    }
    let long = conn.long();
    let mut rt = long.runtime().await?;
    let id = resolve_container(conn, &mut rt, &args.container).await?;
    let request = ExecSyncRequest { container_id: id.clone(), cmd: args.command.clone(), timeout: args.timeout };
    let response = match rt.exec_sync(request).await {
        Ok(response) => response.into_inner(),
        // berthd killed the command at --timeout: say so, not "berthd was slow".
        Err(status) if status.code() == tonic::Code::DeadlineExceeded && args.timeout > 0 => {
            return Err(CtlError::Refused(format!(
                "exec in container {id}: the command did not finish within --timeout {}s and was killed",
                args.timeout
            ))
            .into());
        }
        Err(status) => return Err(conn.error(&format!("exec in container {id}"), status).into()),
    };
    // Output as the command wrote it, bytes and all; a closed pipe is not our failure.
    let _ = std::io::stdout().lock().write_all(&response.stdout);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().lock().write_all(&response.stderr);
    Ok(response.exit_code)
}
