//! The CRD YAML generated from the API types, and where it is copied: `crds/` (the source of
//! truth), `config/crd/bases/` (kustomize) and `charts/crane/crds/` (Helm). `make crds`
//! writes every copy; [`stale_files`] tells which committed copies differ from the types.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use crate::{AgentRun, Approval, MCPServer, Model, Tool, WorkerPool};

/// Directories, relative to the workspace root, that each hold one copy of every CRD file.
pub const CRD_DIRS: [&str; 3] = ["crds", "config/crd/bases", "charts/crane/crds"];

const HEADER: &str = "# Generated from operator/api by `make crds`; do not edit by hand.\n";

/// Errors generating, writing or reading CRD files.
#[derive(Debug, thiserror::Error)]
pub enum CrdGenError {
    #[error("cannot render CRD {name} as YAML: {source}")]
    Yaml {
        name: String,
        #[source]
        source: serde_norway::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The workspace root (the parent of this crate's directory), where the CRD directories are.
pub fn workspace_root() -> PathBuf {
    // This crate is operator/api: the workspace root is two levels up.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Every CRD of the API, in a stable order, as it is installed.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        AgentRun::crd(),
        WorkerPool::crd(),
        Tool::crd(),
        MCPServer::crd(),
        Model::crd(),
        Approval::crd(),
    ];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                drop_unsigned_formats(schema);
            }
        }
    }
    crds
}

/// Removes `format: uint32|uint64` (schemars' names for unsigned integers): the apiserver
/// does not know them and warns on every apply; `minimum` already says what they meant.
fn drop_unsigned_formats(schema: &mut JSONSchemaProps) {
    if matches!(
        schema.format.as_deref(),
        Some("uint8" | "uint16" | "uint32" | "uint64")
    ) {
        schema.format = None;
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        drop_unsigned_formats(child);
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(item)) => drop_unsigned_formats(item),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => {
            items.iter_mut().for_each(drop_unsigned_formats)
        }
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = schema.additional_properties.as_mut() {
        drop_unsigned_formats(extra);
    }
}

/// One generated file: its name (`<plural>.<group>.yaml`) and its contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrdFile {
    pub file_name: String,
    pub yaml: String,
}

/// The CRD files as the types generate them.
pub fn render() -> Result<Vec<CrdFile>, CrdGenError> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let body = serde_norway::to_string(&crd).map_err(|source| CrdGenError::Yaml {
                name: name.clone(),
                source,
            })?;
            Ok(CrdFile {
                file_name: format!("{name}.yaml"),
                yaml: format!("{HEADER}{body}"),
            })
        })
        .collect()
}

/// Writes every CRD file into every directory of [`CRD_DIRS`] under `root`, creating the
/// directories; returns the paths written.
pub fn write_all(root: &Path) -> Result<Vec<PathBuf>, CrdGenError> {
    let files = render()?;
    let mut written = Vec::new();
    for dir in CRD_DIRS {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir).map_err(|source| CrdGenError::Write {
            path: dir.clone(),
            source,
        })?;
        for file in &files {
            let path = dir.join(&file.file_name);
            std::fs::write(&path, &file.yaml).map_err(|source| CrdGenError::Write {
                path: path.clone(),
                source,
            })?;
            written.push(path);
        }
    }
    Ok(written)
}

/// A committed CRD file that does not match the types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleFile {
    pub path: PathBuf,
    pub missing: bool,
}

impl fmt::Display for StaleFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.missing {
            "is missing"
        } else {
            "differs from what the types generate"
        };
        write!(f, "{} {what}", self.path.display())
    }
}

/// The files under `root` that are missing or differ from what the types generate (empty
/// when everything is fresh).
pub fn stale_files(root: &Path) -> Result<Vec<StaleFile>, CrdGenError> {
    let files = render()?;
    let mut stale = Vec::new();
    for dir in CRD_DIRS {
        for file in &files {
            let path = root.join(dir).join(&file.file_name);
            match std::fs::read_to_string(&path) {
                Ok(committed) if committed == file.yaml => {}
                Ok(_) => stale.push(StaleFile {
                    path,
                    missing: false,
                }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => stale.push(StaleFile {
                    path,
                    missing: true,
                }),
                Err(source) => return Err(CrdGenError::Read { path, source }),
            }
        }
    }
    Ok(stale)
}
