//! The `docker-filter` command: parse the arguments, set up logging, run.

use std::process::ExitCode;

fn main() -> ExitCode {
    let command = match docker_filter::cli::parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("docker-filter: {e}");
            return ExitCode::from(2);
        }
    };
    docker_filter::logging::init();
    let status = docker_filter::run(command);
    ExitCode::from(u8::try_from(status).unwrap_or(1))
}
