//! `m2wsgi`: serve a Python WSGI application behind Mongrel2.
//!
//! ```text
//! m2wsgi [OPTIONS] APP SEND_SPEC [RECV_SPEC]
//! m2wsgi [OPTIONS] --config-db FILE (--handler-id N | --send-ident UUID | --route PATH) APP
//! ```
//!
//! Run `m2wsgi --help` for the options. The options and the whole program are in the library,
//! [`m2wsgi::wsgi::cli`], so that other front doors to the command share them.

fn main() -> std::process::ExitCode {
    m2wsgi::wsgi::cli::main()
}
