//! Maps a container (image, command, args) to the local program to start. An image whose
//! name contains "crane" runs the workspace binary named by the command from `--crane-bin-dir`;
//! any other image runs its command from the host PATH, so `busybox` + `sh -c` works.

use std::path::{Path, PathBuf};

/// Why a container cannot be turned into a local program. Reported as
/// `CreateContainerConfigError` with this message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProgramError {
    #[error("container {0:?} has no command: the process kubelet cannot run an image's entrypoint")]
    NoCommand(String),
    #[error(
        "container {container:?}: command {command:?} for a Crane image must be a bare binary name (no '/', not empty, not '.' or '..')"
    )]
    BadCraneCommand { container: String, command: String },
    #[error(
        "container {container:?}: Crane binary {path} does not exist (build the workspace first)"
    )]
    CraneBinaryMissing { container: String, path: String },
    #[error("container {0:?}: command contains a NUL byte")]
    Nul(String),
}

/// What to exec: the program and its arguments, after `$(VAR)` expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub path: PathBuf,
    pub args: Vec<String>,
}

/// True when the image is one of Crane's own, so its command names a workspace binary.
pub fn is_crane_image(image: &str) -> bool {
    // Only the repository part counts: a registry host or tag that happens to contain
    // "crane" must not redirect a foreign image to our binaries.
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let repo = last.split(':').next().unwrap_or(last);
    repo.contains("crane")
}

/// Resolve a container's expanded command and args into the program to start.
/// `command` and `args` are already `$(VAR)`-expanded; `args` alone (no command) means the
/// image entrypoint, which a process kubelet does not know, except for Crane images where
/// the entrypoint is the binary named after the image repository.
pub fn resolve(
    container: &str,
    image: &str,
    command: &[String],
    args: &[String],
    crane_bin_dir: &Path,
) -> Result<Program, ProgramError> {
    if command.iter().chain(args).any(|s| s.contains('\0')) {
        return Err(ProgramError::Nul(container.to_owned()));
    }
    let crane = is_crane_image(image);
    let (first, rest): (String, Vec<String>) = match command.split_first() {
        Some((first, rest)) => (first.clone(), rest.iter().chain(args).cloned().collect()),
        None if crane => (image_binary(image), args.to_vec()),
        None => return Err(ProgramError::NoCommand(container.to_owned())),
    };
    if crane {
        // Accept the absolute path a real image would use (/usr/local/bin/crane-executor)
        // by keeping only its file name, but never a path that walks out of the bin dir.
        let name = first.rsplit('/').next().unwrap_or(&first).to_owned();
        if name.is_empty() || name == "." || name == ".." {
            return Err(ProgramError::BadCraneCommand {
                container: container.to_owned(),
                command: first,
            });
        }
        let path = crane_bin_dir.join(&name);
        if !path.is_file() {
            return Err(ProgramError::CraneBinaryMissing {
                container: container.to_owned(),
                path: path.display().to_string(),
            });
        }
        return Ok(Program { path, args: rest });
    }
    // Host programs are looked up on PATH by the OS at spawn time.
    Ok(Program {
        path: PathBuf::from(first),
        args: rest,
    })
}

fn image_binary(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn crane_detection_looks_at_the_repository_only() {
        assert!(is_crane_image("crane-executor"));
        assert!(is_crane_image("ghcr.io/acme/crane-executor:v1"));
        assert!(is_crane_image("localhost:5000/crane-operator@sha256:abc"));
        assert!(!is_crane_image("busybox"));
        assert!(!is_crane_image("crane.example.com/busybox:1"));
        assert!(!is_crane_image("busybox:crane"));
        assert!(!is_crane_image(""));
    }

    #[test]
    fn crane_image_runs_the_workspace_binary() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("crane-executor"), b"").unwrap();
        let p = resolve(
            "c",
            "crane-executor:dev",
            &s(&["/usr/local/bin/crane-executor", "work"]),
            &s(&["--pool", "default"]),
            dir.path(),
        )
        .unwrap();
        assert_eq!(p.path, dir.path().join("crane-executor"));
        assert_eq!(p.args, s(&["work", "--pool", "default"]));

        // No command: the entrypoint is the binary named after the image.
        let p = resolve("c", "crane-executor", &[], &s(&["plan"]), dir.path()).unwrap();
        assert_eq!(p.path, dir.path().join("crane-executor"));
        assert_eq!(p.args, s(&["plan"]));
    }

    #[test]
    fn hostile_crane_commands_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "..", "/", "x/..", "."] {
            let err = resolve("c", "crane-executor", &s(&[bad]), &[], dir.path()).unwrap_err();
            assert!(
                matches!(err, ProgramError::BadCraneCommand { .. }),
                "{bad:?}: {err}"
            );
        }
        // A traversal path keeps only its last component, which must exist in the bin dir.
        let err = resolve(
            "c",
            "crane-executor",
            &s(&["../../../bin/sh"]),
            &[],
            dir.path(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            ProgramError::CraneBinaryMissing {
                container: "c".into(),
                path: dir.path().join("sh").display().to_string()
            }
        );
        let err = resolve("c", "crane", &s(&["a\0b"]), &[], dir.path()).unwrap_err();
        assert_eq!(err, ProgramError::Nul("c".into()));
    }

    #[test]
    fn other_images_run_from_path_and_need_a_command() {
        let dir = tempfile::tempdir().unwrap();
        let p = resolve(
            "c",
            "busybox",
            &s(&["sh", "-c"]),
            &s(&["exit 3"]),
            dir.path(),
        )
        .unwrap();
        assert_eq!(p.path, PathBuf::from("sh"));
        assert_eq!(p.args, s(&["-c", "exit 3"]));
        assert_eq!(
            resolve("c", "busybox", &[], &s(&["x"]), dir.path()),
            Err(ProgramError::NoCommand("c".into()))
        );
    }
}
