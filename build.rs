//! Build script: only does anything with the `wsgi` feature, where it pins the embedded CPython to
//! the interpreter PyO3 was built against (set `PYO3_PYTHON` to choose it).
//!
//! - `-Wl,-rpath,<libdir>`: without it the dynamic loader may pick another `libpython3.x.so`
//!   (Debian's, in `/lib`) than the one we compiled against, and none of the user's packages are
//!   visible (`docs/wsgi.md`, trap 1).
//! - `M2WSGI_PYTHON`: the build interpreter's `sys.executable`, the default `PyConfig.executable`
//!   when no virtualenv is active (`docs/wsgi.md`, trap 2).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "wsgi")]
    wsgi::configure();
}

#[cfg(feature = "wsgi")]
mod wsgi {
    pub(super) fn configure() {
        println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
        if std::env::var_os("CARGO_FEATURE_WSGI").is_none() {
            return;
        }
        // Reads the interpreter config exported by pyo3-ffi's build script (DEP_PYTHON_PYO3_CONFIG).
        let cfg = pyo3_build_config::get();
        pyo3_build_config::add_libpython_rpath_link_args();
        let exe = cfg.executable().unwrap_or_else(|| {
            panic!(
                "pyo3-build-config recorded no Python executable; set PYO3_PYTHON to the \
                 interpreter to embed (e.g. PYO3_PYTHON=$(bash scripts/python.sh))"
            )
        });
        println!("cargo:rustc-env=M2WSGI_PYTHON={exe}");
        if !cfg.shared() {
            println!(
                "cargo:warning=the Python at {exe} has no shared libpython; the m2wsgi command \
                 embeds it statically and C extension modules may fail to import"
            );
        }
    }
}
