//! What every Kalla binary does at start-up: flags with `KALLA_*` environment fallbacks, and logging.

use std::fmt;

use clap::{ArgMatches, Command, CommandFactory, Parser};
use tracing_subscriber::EnvFilter;

/// `json` gives JSON log lines; read by every service.
const LOG_FORMAT_ENV: &str = "KALLA_LOG_FORMAT";

/// `--bind-port` → `KALLA_BIND_PORT`.
pub fn env_name(long: &str) -> String {
    format!("KALLA_{}", long.replace('-', "_").to_ascii_uppercase())
}

/// Flags that are actions, not settings: no variable sets them.
const ACTIONS: [&str; 3] = ["help", "version", "check-config"];

/// Gives every long flag of `command` and its subcommands a `KALLA_*` environment variable
/// (flags win over the environment).
pub fn with_env_fallbacks(command: Command) -> Command {
    command
        .mut_args(|arg| match arg.get_long().map(str::to_string) {
            Some(long) if !ACTIONS.contains(&long.as_str()) && arg.get_env().is_none() => {
                arg.env(env_name(&long))
            }
            _ => arg,
        })
        .mut_subcommands(with_env_fallbacks)
}

/// Takes back the variables [`with_env_fallbacks`] gave `command`'s flags (and its
/// subcommands'), keeping variables a flag names itself.
pub fn without_env_fallbacks(command: Command) -> Command {
    command
        .mut_args(|arg| {
            let generated = arg
                .get_long()
                .is_some_and(|long| arg.get_env().is_some_and(|env| *env == *env_name(long)));
            if generated { arg.env(None) } else { arg }
        })
        .mut_subcommands(without_env_fallbacks)
}

/// Parses `T` from the command line and `KALLA_*` variables; exits with clap's message on error.
pub fn parse_args<T: Parser>() -> T {
    parse_args_with(|command| command)
}

/// [`parse_args`], with `adjust` applied to the command (with its fallbacks) first.
pub fn parse_args_with<T: Parser>(adjust: impl FnOnce(Command) -> Command) -> T {
    let matches: ArgMatches = adjust(with_env_fallbacks(T::command())).get_matches();
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// `KALLA_*` variables in this process's environment that no flag of `T` reads, nor `also_read`
/// (variables the service reads itself, like `KALLA_SECRET_KEY`): a typo, or another service's
/// setting, that would otherwise be silently ignored.
pub fn stray_variables<T: CommandFactory>(also_read: &[&str]) -> Vec<String> {
    let command = with_env_fallbacks(T::command());
    let read: Vec<String> = command
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .chain(
            also_read
                .iter()
                .chain(&[LOG_FORMAT_ENV])
                .map(|name| name.to_string()),
        )
        .collect();
    let mut stray: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| name.starts_with("KALLA_") && !read.contains(name))
        .collect();
    stray.sort();
    stray
}

/// Logs each stray variable (see [`stray_variables`]) at start-up.
pub fn warn_stray(stray: &[String]) {
    for variable in stray {
        tracing::warn!(%variable, "ignored: no setting of this service reads this variable");
    }
}

/// Ends a `--check-config` run: exit status 0 when the settings are valid and no `KALLA_*`
/// variable is stray, else each problem on stderr and exit status 2.
pub fn exit_after_check(service: &str, stray: &[String], validation: Result<(), impl fmt::Display>) -> ! {
    let mut problems: Vec<String> = stray
        .iter()
        .map(|variable| format!("{variable} is not a setting of {service}"))
        .collect();
    if let Err(error) = validation {
        // `{:#}` shows an error's whole chain of causes ("a: b: c"), not only its outermost context.
        problems.push(format!("{error:#}"));
    }
    if problems.is_empty() {
        println!("{service}: configuration is valid");
        std::process::exit(0);
    }
    for problem in problems {
        eprintln!("{service}: {problem}");
    }
    std::process::exit(2);
}

/// Structured logs to stdout; JSON when `KALLA_LOG_FORMAT=json`, level from `RUST_LOG` or `default_level`.
pub fn init_tracing(default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    let json = std::env::var(LOG_FORMAT_ENV).is_ok_and(|f| f.eq_ignore_ascii_case("json"));
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

        let command = command.mut_subcommand("run", without_env_fallbacks);
        let run = command.find_subcommand("run").unwrap();
        let runner = run.get_arguments().find(|a| a.get_id() == "runner").unwrap();
        assert!(runner.get_env().is_none());
        let port = command
            .get_arguments()
            .find(|a| a.get_id() == "bind_port")
            .unwrap();
        assert!(
            port.get_env().is_some(),
            "only the subcommand loses its variables"
        );
    }
}
