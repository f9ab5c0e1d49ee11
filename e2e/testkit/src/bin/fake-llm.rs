//! `crane-fake-llm --listen ADDR`: the fake OpenAI-compatible provider as a process, for the
//! end-to-end suites (pods reach it at the host's address). Prints `listening on ADDR`.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let listen = match (args.next().as_deref(), args.next()) {
        (Some("--listen"), Some(addr)) => addr,
        _ => {
            eprintln!("usage: crane-fake-llm --listen ADDR (e.g. 0.0.0.0:0)");
            return std::process::ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("crane-fake-llm: cannot listen on {listen}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or(listen);
    println!("listening on {addr}");
    let app = crane_testkit::fake_llm::FakeLlm::default().router();
    match axum::serve(listener, app).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crane-fake-llm: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
