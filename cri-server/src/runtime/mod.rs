//! CRI RuntimeService, one file per RPC (or close group). The handlers share one
//! [`RuntimeContext`]; RPCs berth does not implement yet answer `Unimplemented` saying so.

mod container_create;
mod container_list;
mod container_remove;
mod container_start;
mod container_status;
mod container_stop;
pub mod context;
mod exec_sync;
mod reopen_log;
pub mod restart;
mod runtime_config;
mod sandbox_list;
mod sandbox_remove;
mod sandbox_run;
mod sandbox_status;
mod sandbox_stop;
pub mod spec;
mod status;
mod version;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use k8s_cri::v1::*;
use tonic::{Request, Response, Status};

pub use context::RuntimeContext;
pub use sandbox_remove::remove_pod_sandbox;
pub use sandbox_run::{restore_sandboxes, run_pod_sandbox};
pub use sandbox_stop::stop_pod_sandbox;
pub use status::{NETWORK_NOT_READY_REASON, NETWORK_READY, RUNTIME_READY};
pub use version::{RUNTIME_API_VERSION, RUNTIME_NAME};

pub struct RuntimeServer {
    ctx: Arc<RuntimeContext>,
}

impl RuntimeServer {
    pub fn new(ctx: Arc<RuntimeContext>) -> Self {
        Self { ctx }
    }

    pub fn context(&self) -> &Arc<RuntimeContext> {
        &self.ctx
    }
}

/// The answer of every RPC berth does not implement yet.
pub fn not_implemented_yet(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "berth does not implement {rpc} yet: pods and containers land with the runtime milestone; \
         this berthd serves images only"
    ))
}

type ContainerEventStream = Pin<Box<dyn Stream<Item = Result<ContainerEventResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl RuntimeService for RuntimeServer {
    async fn version(&self, request: Request<VersionRequest>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(version::version(request.into_inner())))
    }

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let network = self.ctx.network.clone();
        // readiness() reads the conf dir: off the async workers.
        let network_ready = tokio::task::spawn_blocking(move || network.readiness())
            .await
            .unwrap_or_else(|err| Err(format!("checking the pod network: {err}")));
        Ok(Response::new(status::status(request.into_inner(), &self.ctx.config_json, network_ready)))
    }

    async fn runtime_config(&self, request: Request<RuntimeConfigRequest>) -> Result<Response<RuntimeConfigResponse>, Status> {
        Ok(Response::new(runtime_config::runtime_config(request.into_inner())))
    }

    async fn run_pod_sandbox(&self, request: Request<RunPodSandboxRequest>) -> Result<Response<RunPodSandboxResponse>, Status> {
        let pod_sandbox_id = sandbox_run::run_pod_sandbox(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id }))
    }

    async fn stop_pod_sandbox(&self, request: Request<StopPodSandboxRequest>) -> Result<Response<StopPodSandboxResponse>, Status> {
        sandbox_stop::stop_pod_sandbox_rpc(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(&self, request: Request<RemovePodSandboxRequest>) -> Result<Response<RemovePodSandboxResponse>, Status> {
        sandbox_remove::remove_pod_sandbox_rpc(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(&self, request: Request<PodSandboxStatusRequest>) -> Result<Response<PodSandboxStatusResponse>, Status> {
        Ok(Response::new(sandbox_status::pod_sandbox_status(&self.ctx, request.into_inner())?))
    }

    async fn list_pod_sandbox(&self, request: Request<ListPodSandboxRequest>) -> Result<Response<ListPodSandboxResponse>, Status> {
        Ok(Response::new(sandbox_list::list_pod_sandbox(&self.ctx, request.into_inner())?))
    }

    async fn create_container(&self, request: Request<CreateContainerRequest>) -> Result<Response<CreateContainerResponse>, Status> {
        Ok(Response::new(container_create::create_container(&self.ctx, request.into_inner()).await?))
    }

    async fn start_container(&self, request: Request<StartContainerRequest>) -> Result<Response<StartContainerResponse>, Status> {
        Ok(Response::new(container_start::start_container(&self.ctx, request.into_inner()).await?))
    }

    async fn stop_container(&self, request: Request<StopContainerRequest>) -> Result<Response<StopContainerResponse>, Status> {
        Ok(Response::new(container_stop::stop_container(&self.ctx, request.into_inner()).await?))
    }

    async fn remove_container(&self, request: Request<RemoveContainerRequest>) -> Result<Response<RemoveContainerResponse>, Status> {
        Ok(Response::new(container_remove::remove_container(&self.ctx, request.into_inner()).await?))
    }

    async fn list_containers(&self, request: Request<ListContainersRequest>) -> Result<Response<ListContainersResponse>, Status> {
        Ok(Response::new(container_list::list_containers(&self.ctx, request.into_inner()).await?))
    }

    async fn container_status(&self, request: Request<ContainerStatusRequest>) -> Result<Response<ContainerStatusResponse>, Status> {
        Ok(Response::new(container_status::container_status(&self.ctx, request.into_inner()).await?))
    }

    async fn update_container_resources(
        &self,
        _: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        Err(not_implemented_yet("UpdateContainerResources"))
    }

    async fn reopen_container_log(&self, request: Request<ReopenContainerLogRequest>) -> Result<Response<ReopenContainerLogResponse>, Status> {
        Ok(Response::new(reopen_log::reopen_container_log(&self.ctx, request.into_inner()).await?))
    }

    async fn exec_sync(&self, request: Request<ExecSyncRequest>) -> Result<Response<ExecSyncResponse>, Status> {
        Ok(Response::new(exec_sync::exec_sync(&self.ctx, request.into_inner()).await?))
    }

    async fn exec(&self, _: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        Err(not_implemented_yet("Exec"))
    }

    async fn attach(&self, _: Request<AttachRequest>) -> Result<Response<AttachResponse>, Status> {
        Err(not_implemented_yet("Attach"))
    }

    async fn port_forward(&self, _: Request<PortForwardRequest>) -> Result<Response<PortForwardResponse>, Status> {
        Err(not_implemented_yet("PortForward"))
    }

    async fn container_stats(&self, _: Request<ContainerStatsRequest>) -> Result<Response<ContainerStatsResponse>, Status> {
        Err(not_implemented_yet("ContainerStats"))
    }

    async fn list_container_stats(&self, _: Request<ListContainerStatsRequest>) -> Result<Response<ListContainerStatsResponse>, Status> {
        Err(not_implemented_yet("ListContainerStats"))
    }

    async fn pod_sandbox_stats(&self, _: Request<PodSandboxStatsRequest>) -> Result<Response<PodSandboxStatsResponse>, Status> {
        Err(not_implemented_yet("PodSandboxStats"))
    }

    async fn list_pod_sandbox_stats(&self, _: Request<ListPodSandboxStatsRequest>) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        Err(not_implemented_yet("ListPodSandboxStats"))
    }

    /// kubelet sends the node's pod CIDR here; berth's default network follows it.
    async fn update_runtime_config(&self, request: Request<UpdateRuntimeConfigRequest>) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        let pod_cidr = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        if !pod_cidr.is_empty() {
            let network = self.ctx.network.clone();
            tokio::task::spawn_blocking(move || network.update_pod_cidr(&pod_cidr))
                .await
                .map_err(|err| Status::internal(format!("UpdateRuntimeConfig: {err}")))??;
        }
        Ok(Response::new(UpdateRuntimeConfigResponse {}))
    }

    async fn checkpoint_container(&self, _: Request<CheckpointContainerRequest>) -> Result<Response<CheckpointContainerResponse>, Status> {
        Err(not_implemented_yet("CheckpointContainer"))
    }

    type GetContainerEventsStream = ContainerEventStream;

    async fn get_container_events(&self, _: Request<GetEventsRequest>) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Err(not_implemented_yet("GetContainerEvents"))
    }

    async fn list_metric_descriptors(&self, _: Request<ListMetricDescriptorsRequest>) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        Err(not_implemented_yet("ListMetricDescriptors"))
    }

    async fn list_pod_sandbox_metrics(&self, _: Request<ListPodSandboxMetricsRequest>) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        Err(not_implemented_yet("ListPodSandboxMetrics"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    /// A server over a temp root and state (nothing is created outside them).
    fn test_server(dir: &std::path::Path) -> RuntimeServer {
        let mut config = crate::config::Config::default();
        config.root = dir.join("root");
        config.state = dir.join("state");
        std::fs::create_dir_all(&config.root).unwrap();
        let db = Arc::new(redb::Database::create(config.metadata_db_path()).unwrap());
        let images = Arc::new(berth_images::ImageStore::open(&config.root, db, config.images.clone()).unwrap());
        let store = crate::store::RuntimeStore::open(&config.runtime_db_path()).unwrap();
        let ctx = RuntimeContext::new(config, "{}".into(), store, images, Arc::new(crate::sandbox::network::LoopbackNetwork));
        RuntimeServer::new(Arc::new(ctx))
    }

    #[tokio::test]
    async fn pod_rpcs_check_their_input() {
        let dir = tempfile::tempdir().unwrap();
        let server = test_server(dir.path());
        let status = server.run_pod_sandbox(Request::new(RunPodSandboxRequest::default())).await.expect_err("no config");
        assert_eq!(status.code(), Code::InvalidArgument);
        let status = server
            .pod_sandbox_status(Request::new(PodSandboxStatusRequest { pod_sandbox_id: "nope".into(), verbose: false }))
            .await
            .expect_err("unknown id");
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains("nope"), "{}", status.message());
        let listed = server.list_pod_sandbox(Request::new(ListPodSandboxRequest::default())).await.unwrap();
        assert!(listed.into_inner().items.is_empty());
        server.stop_pod_sandbox(Request::new(StopPodSandboxRequest { pod_sandbox_id: "nope".into() })).await.unwrap();
        server.remove_pod_sandbox(Request::new(RemovePodSandboxRequest { pod_sandbox_id: "nope".into() })).await.unwrap();
    }

    #[tokio::test]
    async fn unbuilt_rpcs_answer_unimplemented_naming_the_rpc() {
        let dir = tempfile::tempdir().unwrap();
        let server = test_server(dir.path());
        let status = match server.get_container_events(Request::new(GetEventsRequest::default())).await {
            Ok(_) => panic!("GetContainerEvents must not stream yet"),
            Err(status) => status,
        };
        assert_eq!(status.code(), Code::Unimplemented);
        assert!(status.message().contains("GetContainerEvents"));
    }
}
