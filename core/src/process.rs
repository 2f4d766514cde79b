//! What every Kalla binary does at start-up: flags with `KALLA_*` environment fallbacks, and logging.

use std::error::Error;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use ballista_core::config::LogRotationPolicy;
use clap::{ArgMatches, Command, CommandFactory, Parser};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

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
/// (variables the service reads itself, like `KALLA_CLUSTER_KEY`): a typo, or another service's
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

/// Ends a binary's run: exit status 0, or the error [`report`]ed on stderr and exit status 1.
pub fn exit_code<E>(result: Result<(), E>) -> ExitCode
where
    E: AsRef<dyn Error + Send + Sync + 'static>,
{
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", report(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// An error as a binary prints it: its message, then each cause that says something the message
/// before it did not. Causes whose text is empty, or already part of the message that wraps them
/// (`"cannot open …: {source}"`), add nothing and are left out.
pub fn report(error: &(dyn Error + 'static)) -> String {
    let mut shown: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        let text = cause.to_string().trim().to_string();
        if !text.is_empty() && !shown.last().is_some_and(|previous| previous.contains(&text)) {
            shown.push(text);
        }
        next = cause.source();
    }
    let Some((message, causes)) = shown.split_first() else {
        return "Error: (the error says nothing more)".to_string();
    };
    let mut report = format!("Error: {message}");
    if !causes.is_empty() {
        report.push_str("\n\nCaused by:");
        for cause in causes {
            report.push_str("\n    ");
            report.push_str(cause);
        }
    }
    report
}

/// Structured logs to `console`; JSON when `KALLA_LOG_FORMAT=json`, level from `RUST_LOG` or
/// `default_level`.
pub fn init_tracing(default_level: &str, console: Console) {
    let settings = LogSettings {
        default_level: default_level.to_string(),
        thread_info: false,
        files: None,
    };
    if let Err(error) = init_logging_on(&settings, console).map(drop) {
        eprintln!("{error}");
    }
}

/// Where log lines go when no log files are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// A service's own output, as Ballista's services log.
    Stdout,
    /// A command's diagnostics, kept out of the results it prints (`kalla query --format csv`).
    Stderr,
}

/// Where a service logs and what each line carries, from Ballista's `--log-level-setting`,
/// `--print-thread-info`, `--log-dir` and `--log-rotation-policy`.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// The filter unless `RUST_LOG` sets one.
    pub default_level: String,
    /// Each line names its thread's id and name.
    pub thread_info: bool,
    /// Log files instead of stdout.
    pub files: Option<LogFiles>,
}

/// Log files as Ballista's stock binaries write them: `<dir>/<prefix>`, with the period appended
/// (`<prefix>.2026-11-30-13`) when they rotate.
#[derive(Debug, Clone)]
pub struct LogFiles {
    pub dir: PathBuf,
    pub prefix: String,
    pub rotation: LogRotationPolicy,
}

impl LogFiles {
    /// The files `--log-dir` and `--log-rotation-policy` ask for, if any. A rotation policy
    /// other than the default (daily) without a directory would be ignored, so it is refused.
    pub fn from_flags(
        dir: Option<&str>,
        prefix: String,
        rotation: LogRotationPolicy,
    ) -> Result<Option<Self>, LoggingError> {
        match dir {
            Some(dir) => Ok(Some(Self {
                dir: PathBuf::from(dir),
                prefix,
                rotation,
            })),
            None if matches!(rotation, LogRotationPolicy::Daily) => Ok(None),
            None => Err(LoggingError::RotationWithoutDir(rotation)),
        }
    }

    fn appender(&self) -> Result<RollingFileAppender, LoggingError> {
        let rotation = match self.rotation {
            LogRotationPolicy::Minutely => Rotation::MINUTELY,
            LogRotationPolicy::Hourly => Rotation::HOURLY,
            LogRotationPolicy::Daily => Rotation::DAILY,
            LogRotationPolicy::Never => Rotation::NEVER,
        };
        RollingFileAppender::builder()
            .rotation(rotation)
            .filename_prefix(&self.prefix)
            .build(&self.dir)
            .map_err(|source| LoggingError::Files {
                dir: self.dir.clone(),
                source,
            })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("--log-rotation-policy {0} needs --log-dir: only log files rotate")]
    RotationWithoutDir(LogRotationPolicy),
    #[error("cannot write logs into --log-dir {}: {source}", dir.display())]
    Files {
        dir: PathBuf,
        source: tracing_appender::rolling::InitError,
    },
    #[error("logging is already set up: {0}")]
    AlreadySetUp(String),
}

/// Writes buffered lines to the log file until dropped: keep it until the process ends.
#[must_use = "dropping it stops writing to the log file"]
pub struct LogGuard {
    _file_writer: Option<WorkerGuard>,
}

/// Sets up logging as `settings` say; JSON lines when `KALLA_LOG_FORMAT=json`.
pub fn init_logging(settings: &LogSettings) -> Result<LogGuard, LoggingError> {
    init_logging_on(settings, Console::Stdout)
}

fn init_logging_on(settings: &LogSettings, console: Console) -> Result<LogGuard, LoggingError> {
    let (writer, guard) = match (&settings.files, console) {
        (None, Console::Stdout) => (BoxMakeWriter::new(std::io::stdout), None),
        (None, Console::Stderr) => (BoxMakeWriter::new(std::io::stderr), None),
        (Some(files), _) => {
            // Not lossy: a burst of lines waits for the file instead of being dropped.
            let (writer, guard) = NonBlockingBuilder::default()
                .lossy(false)
                .finish(files.appender()?);
            (BoxMakeWriter::new(writer), Some(guard))
        }
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_thread_ids(settings.thread_info)
        .with_thread_names(settings.thread_info)
        .with_writer(writer);
    let json = std::env::var(LOG_FORMAT_ENV).is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|error| LoggingError::AlreadySetUp(error.to_string()))?;
    Ok(LogGuard { _file_writer: guard })
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

    #[test]
    fn a_rotation_policy_without_a_log_dir_is_refused_not_ignored() {
        let refused = LogFiles::from_flags(None, "scheduler".into(), LogRotationPolicy::Hourly).unwrap_err();
        assert!(refused.to_string().contains("--log-dir"), "{refused}");
        let default = LogFiles::from_flags(None, "scheduler".into(), LogRotationPolicy::Daily).unwrap();
        assert!(default.is_none());
        let files = LogFiles::from_flags(
            Some("/var/log/kalla"),
            "scheduler".into(),
            LogRotationPolicy::Never,
        )
        .unwrap()
        .unwrap();
        assert_eq!(files.dir, PathBuf::from("/var/log/kalla"));
    }

    #[test]
    fn a_log_dir_that_cannot_be_created_is_an_error_naming_it() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let files = LogFiles {
            dir: file.path().join("logs"),
            prefix: "executor".into(),
            rotation: LogRotationPolicy::Never,
        };
        let error = files.appender().unwrap_err();
        assert!(
            error.to_string().contains(&file.path().display().to_string()),
            "{error}"
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Says(String, #[source] Option<Box<Says>>);

    fn chain(texts: &[&str]) -> Says {
        texts
            .iter()
            .rev()
            .fold(None, |source, text| {
                Some(Says(text.to_string(), source.map(Box::new)))
            })
            .expect("at least one message")
    }

    #[test]
    fn reports_leave_out_empty_and_repeated_causes() {
        let error = chain(&[
            "cannot open the metadata database: refused",
            "",
            "refused",
            "os error 111",
        ]);
        assert_eq!(
            report(&error),
            "Error: cannot open the metadata database: refused\n\nCaused by:\n    os error 111"
        );
        assert_eq!(
            report(&chain(&["metadata database", "  "])),
            "Error: metadata database"
        );
        assert_eq!(report(&chain(&["", "the cause"])), "Error: the cause");
    }
}
