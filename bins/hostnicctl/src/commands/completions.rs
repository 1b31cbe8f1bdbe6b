//! `hostnicctl completions SHELL`: the shell completion script on stdout
//! (clap_complete), e.g. `hostnicctl completions bash > /etc/bash_completion.d/hostnicctl`.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// Arguments of `hostnicctl completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

/// Prints the completion script of `C` for the shell.
pub fn exec<C: CommandFactory>(args: CompletionsArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut command = C::command();
    let name = command.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, name, &mut script);
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
