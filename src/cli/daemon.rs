//! `bitrush daemon`: starts the library's [`Daemon`] and its HTTP API, prints where they
//! listen, and stops both cleanly on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bitrush::daemon::api::{self, Access, Credentials};
use bitrush::daemon::{Daemon, DaemonConfig};
use bitrush::engine::dht::DhtOptions;
use bitrush::queue::QueueLimits;

use super::commands::SessionOptions;

/// What `bitrush daemon` was given.
pub struct DaemonArgs {
    pub state_dir: PathBuf,
    pub download_dir: PathBuf,
    pub api: SocketAddr,
    pub credentials: Option<Credentials>,
    pub max_connections: usize,
    pub max_peers: usize,
    pub limits: QueueLimits,
    pub save_every: Duration,
    /// Global rate limits, bytes per second (`None`: the saved ones).
    pub max_download_rate: Option<u64>,
    pub max_upload_rate: Option<u64>,
    pub session: SessionOptions,
}

pub async fn daemon(args: DaemonArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.download_dir)
        .with_context(|| format!("cannot create {}", args.download_dir.display()))?;
    let download_dir = std::fs::canonicalize(&args.download_dir)
        .with_context(|| format!("cannot use {}", args.download_dir.display()))?;
    let opts = &args.session;
    let config = DaemonConfig {
        state_dir: args.state_dir.clone(),
        download_dir,
        port: opts.port,
        max_connections: args.max_connections,
        max_peers_per_torrent: args.max_peers,
        limits: args.limits,
        dht: opts.dht.as_ref().map(|d| DhtOptions {
            bootstrap: d.bootstrap.clone(),
            state_file: Some(args.state_dir.join("dht.dat")),
        }),
        tcp: opts.tcp,
        utp: opts.utp,
        encryption: opts.encryption,
        save_every: args.save_every,
        max_download_rate: args.max_download_rate,
        max_upload_rate: args.max_upload_rate,
    };
    let listener = tokio::net::TcpListener::bind(args.api)
        .await
        .with_context(|| format!("cannot listen for the API on {}", args.api))?;
    let api_addr = listener.local_addr().unwrap_or(args.api);
    let access = Access::for_bind(api_addr, args.credentials);
    if matches!(access, Access::Refused) {
        tracing::warn!(
            "the API is bound to {api_addr}, not loopback, without --api-user/--api-password: every request is refused"
        );
    }
    let daemon = Daemon::start(config).await?;
    println!("API: http://{api_addr}");
    println!("Peer port: {}", daemon.port());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(listener, daemon.clone(), access, async move {
        let _ = stop_rx.await;
    }));
    super::commands::wait_for_signal().await;
    tracing::info!("stopping");
    let _ = stop_tx.send(());
    daemon.shutdown().await;
    // The server stops once its open connections are done; a client holding one open must not
    // keep the daemon from exiting.
    let _ = tokio::time::timeout(Duration::from_secs(3), server).await;
    eprintln!("bitrush daemon stopped; every torrent's state is saved");
    Ok(())
}
