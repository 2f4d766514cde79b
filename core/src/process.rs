//! What every Kalla binary does at start-up: flags with `KALLA_*` environment fallbacks, and logging.

use clap::{ArgMatches, Command, Parser};
use tracing_subscriber::EnvFilter;

/// `--bind-port` → `KALLA_BIND_PORT`.
pub fn env_name(long: &str) -> String {
    format!("KALLA_{}", long.replace('-', "_").to_ascii_uppercase())
}

/// Gives every long flag of `command` and its subcommands a `KALLA_*` environment variable
/// (flags win over the environment).
pub fn with_env_fallbacks(command: Command) -> Command {
    command
        .mut_args(|arg| match arg.get_long().map(str::to_string) {
            Some(long) if long != "help" && long != "version" && arg.get_env().is_none() => {
                arg.env(env_name(&long))
            }
            _ => arg,
        })
        .mut_subcommands(with_env_fallbacks)
}

/// Parses `T` from the command line and `KALLA_*` variables; exits with clap's message on error.
pub fn parse_args<T: Parser>() -> T {
    let matches: ArgMatches = with_env_fallbacks(T::command()).get_matches();
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Structured logs to stdout; JSON when `KALLA_LOG_FORMAT=json`, level from `RUST_LOG` or `default_level`.
pub fn init_tracing(default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    let json = std::env::var("KALLA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(error) = result {
        eprintln!("logging already initialised: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[derive(Parser, Debug)]
    struct Args {
        #[arg(long, default_value_t = 1)]
        bind_port: u16,
        #[arg(long)]
        work_dir: Option<String>,
        #[command(subcommand)]
        command: Option<Sub>,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Sub {
        Run {
            #[arg(long)]
            runner: Option<String>,
        },
    }

    #[test]
    fn environment_fills_flags_and_flags_win() {
        let command = with_env_fallbacks(Args::command());
        let port = command
            .get_arguments()
            .find(|a| a.get_id() == "bind_port")
            .unwrap();
        assert_eq!(port.get_env().unwrap(), "KALLA_BIND_PORT");
        assert_eq!(env_name("work-dir"), "KALLA_WORK_DIR");
        let run = command.find_subcommand("run").unwrap();
        let runner = run.get_arguments().find(|a| a.get_id() == "runner").unwrap();
        assert_eq!(runner.get_env().unwrap(), "KALLA_RUNNER");
    }
}
