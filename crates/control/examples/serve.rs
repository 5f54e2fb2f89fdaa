//! Serves the control plane's API alone, for trying the CLI before it is
//! wired into `neocloud up`:
//!
//! ```sh
//! cargo run -p neocloud-control --example serve -- /tmp/neocloud-data 127.0.0.1:8080
//! ```

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let data_dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "data".into()));
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let store = neocloud_control::Store::open(&data_dir)?;
    let app = neocloud_control::api::router(store, data_dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        eprintln!("control plane API on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        Ok(())
    })
}
