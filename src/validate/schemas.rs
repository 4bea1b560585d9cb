//! The official schema catalogue: MHLW's 特定健診・特定保健指導 V08 schema sets, pinned (names,
//! edition, namespace, sha256 of every file) as facts in code and loaded from `schema_dir`,
//! which holds one folder per installed set (`mhlw-v08/`, `mhlw-v08-2007ns/`). The files are
//! MHLW's and never part of this repository: `handoff schemas install` puts them in place.
//!
//! Three editions circulate: the current one, the 2007-namespace one (checkup only) and an
//! intermediate one (the 2007 namespace with the current code lists), which is derived at load
//! time from the current set. A file is validated against the edition its root namespace names;
//! a 2007-namespace file passes when either the 2007 or the intermediate edition accepts it.
//!
//! Files are hashed once per process and directory; libxml2's schema contexts are not `Send`,
//! so each thread compiles its own [`Catalog`] (see [`with_catalog`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use libxml::schemas::{SchemaParserContext, SchemaValidationContext};
use sha2::{Digest, Sha256};

use super::xml::{self, MAX_FINDINGS_PER_FILE, SchemaError, Tree};
use crate::events::Finding;
use crate::sync::Recover;
use crate::validate::finding::Rule;

pub use super::format::{CDA_NS as NS_CDA, NS_2007, NS_CURRENT};

/// One file of an official set and its sha256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    /// Path relative to the set's folder, `/`-separated.
    pub path: &'static str,
    /// Lowercase hex.
    pub sha256: &'static str,
}

/// An official schema set as MHLW (or, for the 2007 namespace, the JMA's ORCA) ships it.
#[derive(Debug, PartialEq, Eq)]
pub struct OfficialSet {
    /// The folder of `schema_dir` it is installed in.
    pub folder: &'static str,
    pub edition: Edition,
    /// Namespace of ix08/su08/cc08/gc08/co08.
    pub namespace: &'static str,
    /// Without it the gateway cannot check archives.
    pub required: bool,
    pub files: &'static [Pin],
}

impl OfficialSet {
    /// The pin of `path` in this set.
    pub fn pin(&self, path: &str) -> Option<&'static Pin> {
        self.files.iter().find(|p| p.path == path)
    }

    /// The set whose folder is `folder`.
    pub fn by_folder(folder: &str) -> Option<&'static OfficialSet> {
        SETS.into_iter().find(|s| s.folder == folder)
    }
}

/// The current edition, spec Version 4 (2023-03-31).
pub static SET_CURRENT: OfficialSet = OfficialSet {
    folder: "mhlw-v08",
    edition: Edition::Current,
    namespace: NS_CURRENT,
    required: true,
    files: &[
        Pin {
            path: "ix08_V08.xsd",
            sha256: "0cd7e4b909ae63b7f5845eda1d2bf28826fc6730e57669356519dca55d04d4c1",
        },
        Pin {
            path: "su08_V08.xsd",
            sha256: "49ee3eb7f93f0e6cfe139699e26668b3c17878bf28a86bf7a9e883675bcf166d",
        },
        Pin {
            path: "cc08_V08.xsd",
            sha256: "6d85c0187f3cd6a4b9b0568dc1a33cf6281131d9dfe2108fc805e3185af6e3f8",
        },
        Pin {
            path: "gc08_V08.xsd",
            sha256: "f7679550d648c0908675aa1746b18f2a9d95b646f1a969664aa933078bbc7c70",
        },
        Pin {
            path: "co08_V08.xsd",
            sha256: "f3b35f50030759d0d949483b4bde7fb31e8aad9b70d7c88ef117e4e48dc3cdd8",
        },
        Pin {
            path: "hc08_V08.xsd",
            sha256: "d6c463645f3de0bf0d8487f23c5ecbb4810208a949d2fa1b935d6bb83a3a2561",
        },
        Pin {
            path: "hg08_V08.xsd",
            sha256: "a5411bdadeaa8cb5122c3491a7c54e43d5c4957f35834b65cf50f21c09e85654",
        },
        Pin {
            path: "coreschemas/datatypes-base_hcgv08.xsd",
            sha256: "910f074960a7af744ec80405971b79bece7533f9cb51e7a4d684d69009ea472e",
        },
        Pin {
            path: "coreschemas/datatypes_hcgv08.xsd",
            sha256: "67f0d98507f5fb5a14b61900a704e8f5e2efe46b5e6248c8e950039727c9af6f",
        },
        Pin {
            path: "coreschemas/narrativeBlock_hcgv08.xsd",
            sha256: "d827061fe5aa40c763ccbf79c5179862e1962d913fb91531ac8c5bbeeabc027e",
        },
        Pin {
            path: "coreschemas/voc_hcgv08.xsd",
            sha256: "85ceb669439d32cae8998c86dfffe24f39382377332a77613804a67dd00d3d24",
        },
    ],
};

/// The 2007-namespace edition (checkup only: no gc08/hg08), as the JMA's ORCA shipped it in 2018.
pub static SET_2007: OfficialSet = OfficialSet {
    folder: "mhlw-v08-2007ns",
    edition: Edition::V2007,
    namespace: NS_2007,
    required: false,
    files: &[
        Pin {
            path: "ix08_V08.xsd",
            sha256: "b340d9607e6a6c2318d9ef90078e4bc438228814296b2d565fabbea49836cd15",
        },
        Pin {
            path: "su08_V08.xsd",
            sha256: "0d04a77969d9c5837cb6a1f8fba72110445fdc00d968fed2a4533afc58b344fd",
        },
        Pin {
            path: "cc08_V08.xsd",
            sha256: "4e497a9fce064b0ea7f78cc3cdeff3de4d38edbf11519a13339067b5e535e722",
        },
        Pin {
            path: "co08_V08.xsd",
            sha256: "8823a9ff18b55c0de6bbccd9fcfd606bf49f82aceed88a44c77e7e0d1afac0d7",
        },
        Pin {
            path: "hc08_V08.xsd",
            sha256: "d6c463645f3de0bf0d8487f23c5ecbb4810208a949d2fa1b935d6bb83a3a2561",
        },
        Pin {
            path: "coreschemas/datatypes-base_hcgv08.xsd",
            sha256: "0c33f9b4a70167b1d4465c4d0e17035e653dbe7e07a1a3a40ee6b8b3616abfce",
        },
        Pin {
            path: "coreschemas/datatypes_hcgv08.xsd",
            sha256: "05c5c10d3da98da552396c7fa5558e9fa55fa0442fc914fcd071bfd4dcd042f0",
        },
        Pin {
            path: "coreschemas/narrativeBlock_hcgv08.xsd",
            sha256: "6627cc36f040d2cf7d439e2eacec9604bab99739a054e533ee084675a595fc7e",
        },
        Pin {
            path: "coreschemas/voc_hcgv08.xsd",
            sha256: "accf4bde1b0290a512f778995ef1d3b9ea8ea69c1affae5585622b11230bf2a4",
        },
    ],
};

/// Every official set, the required one first.
pub static SETS: [&OfficialSet; 2] = [&SET_CURRENT, &SET_2007];

/// The files of the current set the intermediate edition is derived from (with their namespace
/// replaced); hc08/hg08 and `coreschemas/` are the CDA's, which has one namespace in every
/// edition.
const INTERMEDIATE_FILES: [&str; 5] = [
    "ix08_V08.xsd",
    "su08_V08.xsd",
    "cc08_V08.xsd",
    "gc08_V08.xsd",
    "co08_V08.xsd",
];

/// An edition of the exchange format, as a file's root namespace selects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Edition {
    /// The current namespace and code lists (set `mhlw-v08`).
    Current,
    /// The 2007 namespace with the current (2017) code lists: derived from `mhlw-v08`.
    Intermediate,
    /// The 2007 namespace and code lists (set `mhlw-v08-2007ns`).
    V2007,
}

impl Edition {
    pub const ALL: [Edition; 3] = [Edition::Current, Edition::Intermediate, Edition::V2007];

    /// The id used in configuration and messages.
    pub fn id(self) -> &'static str {
        match self {
            Edition::Current => "current",
            Edition::Intermediate => "intermediate",
            Edition::V2007 => "2007",
        }
    }

    pub fn from_id(id: &str) -> Option<Edition> {
        Edition::ALL.into_iter().find(|e| e.id() == id)
    }

    /// The namespace of its ix08/su08/cc08/gc08/co08.
    pub fn namespace(self) -> &'static str {
        match self {
            Edition::Current => NS_CURRENT,
            Edition::Intermediate | Edition::V2007 => NS_2007,
        }
    }

    /// The folder of `schema_dir` its schemas come from (the intermediate edition is derived
    /// from the current set's).
    pub fn folder(self) -> &'static str {
        self.set().folder
    }

    /// The official set its schemas come from.
    pub fn set(self) -> &'static OfficialSet {
        match self {
            Edition::Current | Edition::Intermediate => &SET_CURRENT,
            Edition::V2007 => &SET_2007,
        }
    }

    pub fn name_ja(self) -> &'static str {
        match self {
            Edition::Current => "現行版",
            Edition::Intermediate => "旧名前空間・新コード表版",
            Edition::V2007 => "2007年版",
        }
    }

    pub fn name_en(self) -> &'static str {
        match self {
            Edition::Current => "current",
            Edition::Intermediate => "intermediate (2007 namespace, 2017 code lists)",
            Edition::V2007 => "2007",
        }
    }

    /// The editions a root namespace selects, in the order they are tried.
    pub fn of_namespace(ns: &str) -> &'static [Edition] {
        match ns {
            NS_CURRENT => &[Edition::Current],
            NS_2007 => &[Edition::V2007, Edition::Intermediate],
            _ => &[],
        }
    }
}

impl fmt::Display for Edition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// What a document is, which picks its schema file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `ix08_V08.xml`, root `index`.
    Index,
    /// `su08_V08.xml`, root `summary`.
    Summary,
    /// `CLAIMS/c…xml`, root `checkupClaim`.
    CheckupClaim,
    /// `CLAIMS/p…xml`, root `healthGuidanceClaim`.
    GuidanceClaim,
    /// `DATA/h…xml`, root `ClinicalDocument` in the CDA namespace.
    CheckupCda,
    /// `DATA/g…xml`, root `ClinicalDocument` in the CDA namespace.
    GuidanceCda,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Index,
        Role::Summary,
        Role::CheckupClaim,
        Role::GuidanceClaim,
        Role::CheckupCda,
        Role::GuidanceCda,
    ];

    /// Its schema file in a set's folder.
    pub fn schema_file(self) -> &'static str {
        match self {
            Role::Index => "ix08_V08.xsd",
            Role::Summary => "su08_V08.xsd",
            Role::CheckupClaim => "cc08_V08.xsd",
            Role::GuidanceClaim => "gc08_V08.xsd",
            Role::CheckupCda => "hc08_V08.xsd",
            Role::GuidanceCda => "hg08_V08.xsd",
        }
    }

    /// The root element's local name.
    pub fn root(self) -> &'static str {
        match self {
            Role::Index => "index",
            Role::Summary => "summary",
            Role::CheckupClaim => "checkupClaim",
            Role::GuidanceClaim => "healthGuidanceClaim",
            Role::CheckupCda | Role::GuidanceCda => "ClinicalDocument",
        }
    }

    /// A CDA document: validated with the current set's hc08/hg08 whatever the edition of the
    /// archive's other files.
    pub fn is_cda(self) -> bool {
        matches!(self, Role::CheckupCda | Role::GuidanceCda)
    }
}

/// The result of validating one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    /// The edition the document was validated against: the one that accepted it or, when none
    /// did, the one whose findings are given. `None` for the CDA (one schema in every edition)
    /// and for a namespace of no edition.
    pub edition: Option<Edition>,
    /// `xsd.invalid` or `edition.unknown` findings, at most the per-file cap of schema findings.
    pub findings: Vec<Finding>,
}

impl Validated {
    pub fn is_valid(&self) -> bool {
        self.findings.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// Verification against the pins

/// What was found for one file of a set's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    /// Its sha256 is the pinned one.
    Pinned,
    /// Its sha256 is not the pinned one: a different (e.g. newer) release. It is loaded as found.
    Differs {
        pinned: &'static str,
        found: String,
        /// The file is the pinned one with CRLF line ends: `schemas install` converts them.
        line_ends_only: bool,
    },
    Missing,
    Unreadable(String),
    /// A schema file in the folder that no pin names; it is not loaded unless a pinned file
    /// includes it.
    NotPinned,
}

/// One file of a set's folder and what was found for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheck {
    /// Path relative to the set's folder.
    pub path: String,
    pub status: FileStatus,
}

/// One official set in a schema directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetReport {
    pub set: &'static OfficialSet,
    /// Its folder exists.
    pub present: bool,
    /// One entry per pin, then any unpinned schema files.
    pub files: Vec<FileCheck>,
}

impl SetReport {
    /// The folder exists and every pinned file is there and readable (pinned or differing).
    pub fn complete(&self) -> bool {
        self.present
            && self
                .files
                .iter()
                .all(|f| !matches!(f.status, FileStatus::Missing | FileStatus::Unreadable(_)))
    }

    pub fn all_pinned(&self) -> bool {
        self.present
            && self
                .files
                .iter()
                .all(|f| matches!(f.status, FileStatus::Pinned | FileStatus::NotPinned))
    }
}

/// What a schema directory holds, checked against the pins: printed by `check-config` and
/// `schemas verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub dir: PathBuf,
    /// One per official set, in [`SETS`] order.
    pub sets: Vec<SetReport>,
}

impl Report {
    /// Hashes every file of every set in `dir` against the pins.
    pub fn of(dir: &Path) -> Report {
        let sets = SETS
            .iter()
            .map(|set| {
                let folder = dir.join(set.folder);
                let present = folder.is_dir();
                let mut files = Vec::new();
                for pin in set.files {
                    let status = if !present {
                        FileStatus::Missing
                    } else {
                        match fs::read(folder.join(pin.path)) {
                            Ok(bytes) => check_bytes(pin, &bytes),
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                                FileStatus::Missing
                            }
                            Err(e) => FileStatus::Unreadable(e.to_string()),
                        }
                    };
                    files.push(FileCheck {
                        path: pin.path.to_owned(),
                        status,
                    });
                }
                if present {
                    let mut extra = Vec::new();
                    schema_files_under(&folder, "", &mut extra);
                    extra.sort();
                    for path in extra {
                        if set.pin(&path).is_none() {
                            files.push(FileCheck {
                                path,
                                status: FileStatus::NotPinned,
                            });
                        }
                    }
                }
                SetReport {
                    set,
                    present,
                    files,
                }
            })
            .collect();
        Report {
            dir: dir.to_path_buf(),
            sets,
        }
    }

    pub fn set(&self, edition_set: &OfficialSet) -> Option<&SetReport> {
        self.sets.iter().find(|s| std::ptr::eq(s.set, edition_set))
    }

    /// The editions this directory makes available (the intermediate one with the current set).
    pub fn editions(&self) -> Vec<Edition> {
        Edition::ALL
            .into_iter()
            .filter(|e| self.set(e.set()).is_some_and(SetReport::complete))
            .collect()
    }

    /// Files whose hash is not the pinned one, as `folder/path`.
    pub fn differing(&self) -> impl Iterator<Item = (&SetReport, &FileCheck)> {
        self.sets.iter().flat_map(|s| {
            s.files
                .iter()
                .filter(|f| matches!(f.status, FileStatus::Differs { .. }))
                .map(move |f| (s, f))
        })
    }

    /// Every deviation from the pins, one line each: what an operator must see.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.sets {
            if !s.present {
                continue;
            }
            for f in &s.files {
                let at = format!("{}/{}/{}", self.dir.display(), s.set.folder, f.path);
                match &f.status {
                    FileStatus::Pinned => {}
                    FileStatus::Differs {
                        pinned,
                        found,
                        line_ends_only,
                    } => out.push(format!(
                        "{at}: sha256 {found} is not the pinned {pinned}{}; it is loaded as found",
                        if *line_ends_only {
                            " (the pinned file with CRLF line ends: reinstall it with `handoff schemas install`)"
                        } else {
                            " (a different release of the MHLW schemas?)"
                        }
                    )),
                    FileStatus::Missing => out.push(format!("{at}: missing")),
                    FileStatus::Unreadable(e) => out.push(format!("{at}: unreadable: {e}")),
                    FileStatus::NotPinned => {
                        out.push(format!("{at}: not a pinned file of the set (ignored)"))
                    }
                }
            }
        }
        out
    }
}

impl fmt::Display for Report {
    /// The lines `check-config` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "schema sets in {}:", self.dir.display())?;
        for s in &self.sets {
            let name = format!(
                "{} edition ({})",
                s.set.edition.name_en(),
                s.set.edition.name_ja()
            );
            if !s.present {
                writeln!(
                    f,
                    "  {:<16} {name}: not installed{}",
                    s.set.folder,
                    if s.set.required {
                        " (REQUIRED)"
                    } else {
                        "; that edition is unavailable"
                    }
                )?;
                continue;
            }
            let pinned = s
                .files
                .iter()
                .filter(|f| f.status == FileStatus::Pinned)
                .count();
            let differing = s
                .files
                .iter()
                .filter(|f| matches!(f.status, FileStatus::Differs { .. }))
                .count();
            let state = if s.all_pinned() {
                format!("{pinned} files, all as pinned")
            } else if !s.complete() {
                "INCOMPLETE".to_owned()
            } else {
                format!("{pinned} files as pinned, {differing} DIFFERING from the pins")
            };
            writeln!(f, "  {:<16} {name}: {state}", s.set.folder)?;
        }
        let available = self.editions();
        let show = |e: Edition| {
            if available.contains(&e) {
                format!("{} ({})", e.id(), e.name_ja())
            } else {
                format!("{} (unavailable)", e.id())
            }
        };
        writeln!(f, "editions by root namespace:")?;
        writeln!(f, "  {NS_CURRENT} -> {}", show(Edition::Current))?;
        writeln!(
            f,
            "  {NS_2007} -> {}, else {}",
            show(Edition::V2007),
            show(Edition::Intermediate)
        )?;
        writeln!(f, "  {NS_CDA} (CDA) -> hc08/hg08 of {}", SET_CURRENT.folder)?;
        writeln!(f, "  any other namespace -> edition.unknown")?;
        for w in self.warnings() {
            writeln!(f, "WARNING: {w}")?;
        }
        Ok(())
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn without_crs(bytes: &[u8]) -> Option<Vec<u8>> {
    if !bytes.windows(2).any(|w| w == b"\r\n") {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        if !(b == b'\r' && bytes.get(i + 1) == Some(&b'\n')) {
            out.push(b);
        }
    }
    Some(out)
}

fn check_bytes(pin: &Pin, bytes: &[u8]) -> FileStatus {
    let found = sha256_hex(bytes);
    if found == pin.sha256 {
        return FileStatus::Pinned;
    }
    let line_ends_only = without_crs(bytes).is_some_and(|b| sha256_hex(&b) == pin.sha256);
    FileStatus::Differs {
        pinned: pin.sha256,
        found,
        line_ends_only,
    }
}

/// Relative paths of the `.xsd` files under `dir` (symbolic links to folders not followed).
fn schema_files_under(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let rel = format!("{prefix}{name}");
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            schema_files_under(&entry.path(), &format!("{rel}/"), out);
        } else if name.to_ascii_lowercase().ends_with(".xsd") {
            out.push(rel);
        }
    }
}

/// The intermediate edition's schema texts: the current set's, with the current namespace
/// (`targetNamespace` and the default `xmlns`) replaced by the 2007 one.
pub fn derive_intermediate(name: &str, text: &str) -> Result<String, String> {
    let mut out = text.to_owned();
    for attr in ["targetNamespace", "xmlns"] {
        let from = format!("{attr}=\"{NS_CURRENT}\"");
        if !out.contains(&from) {
            return Err(format!(
                "{name} has no {attr}=\"{NS_CURRENT}\": the intermediate edition cannot be derived"
            ));
        }
        out = out.replace(&from, &format!("{attr}=\"{NS_2007}\""));
    }
    if out.contains(NS_CURRENT) {
        return Err(format!(
            "{name} names the current namespace beyond targetNamespace and xmlns: \
             the intermediate edition cannot be derived"
        ));
    }
    Ok(out)
}

/// What is computed once per process and directory: the report and the derived texts.
#[derive(Debug)]
struct Verified {
    report: Report,
    intermediate: Result<Vec<(&'static str, String)>, SchemaError>,
}

impl Verified {
    fn of(dir: &Path) -> Verified {
        let report = Report::of(dir);
        let folder = dir.join(SET_CURRENT.folder);
        let intermediate = INTERMEDIATE_FILES
            .iter()
            .map(|&name| {
                let file = folder.join(name);
                let text = fs::read_to_string(&file).map_err(|e| SchemaError {
                    file: file.clone(),
                    detail: e.to_string(),
                })?;
                let derived = derive_intermediate(name, &text)
                    .map_err(|detail| SchemaError { file, detail })?;
                Ok((name, derived))
            })
            .collect();
        Verified {
            report,
            intermediate,
        }
    }

    /// This process's verification of `dir`, hashing it on first use.
    fn cached(dir: &Path) -> Arc<Verified> {
        static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Verified>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(v) = cache.locked().get(dir) {
            return v.clone();
        }
        let v = Arc::new(Verified::of(dir));
        cache.locked().entry(dir.to_path_buf()).or_insert(v).clone()
    }
}

// ---------------------------------------------------------------------------------------------
// The compiled catalogue

/// The compiled schemas of a schema directory, per edition and role. Not `Send`: one per thread.
pub struct Catalog {
    verified: Arc<Verified>,
    schemas: HashMap<(Edition, Role), SchemaValidationContext>,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog")
            .field("dir", &self.verified.report.dir)
            .field("editions", &self.editions())
            .finish()
    }
}

impl Catalog {
    /// Loads and compiles the sets in `schema_dir`: the current set is required, the 2007 set
    /// optional (absent: that edition is unavailable; present but incomplete: an error). Files
    /// are hashed once per process and directory; a file that differs from its pin is loaded
    /// and listed in [`Catalog::report`].
    pub fn load(schema_dir: &Path) -> Result<Catalog, SchemaError> {
        let verified = Verified::cached(schema_dir);
        let report = &verified.report;
        let mut schemas = HashMap::new();
        for s in &report.sets {
            let folder = schema_dir.join(s.set.folder);
            if !s.present {
                if s.set.required {
                    return Err(SchemaError {
                        file: folder,
                        detail: format!(
                            "the {} edition's schema set is not installed \
                             (install MHLW's set with `handoff schemas install`)",
                            s.set.edition.name_en()
                        ),
                    });
                }
                continue;
            }
            if let Some(f) = s
                .files
                .iter()
                .find(|f| matches!(f.status, FileStatus::Missing | FileStatus::Unreadable(_)))
            {
                return Err(SchemaError {
                    file: folder.join(&f.path),
                    detail: match &f.status {
                        FileStatus::Unreadable(e) => format!("unreadable: {e}"),
                        _ => "missing: the set is incomplete".into(),
                    },
                });
            }
            for role in Role::ALL {
                // The CDA is validated with the current set's hc08/hg08 only.
                if (role.is_cda() && s.set.edition != Edition::Current)
                    || s.set.pin(role.schema_file()).is_none()
                {
                    continue;
                }
                let context = compile(&folder.join(role.schema_file()), None)?;
                schemas.insert((s.set.edition, role), context);
            }
        }
        let derived = verified.intermediate.as_ref().map_err(|e| SchemaError {
            file: e.file.clone(),
            detail: e.detail.clone(),
        })?;
        for (role, context) in compile_intermediate(derived, schema_dir)? {
            schemas.insert((Edition::Intermediate, role), context);
        }
        Ok(Catalog { verified, schemas })
    }

    /// The directory, the sets found in it and every file that differs from its pin.
    pub fn report(&self) -> &Report {
        &self.verified.report
    }

    /// The editions this catalogue validates.
    pub fn editions(&self) -> Vec<Edition> {
        let mut out: Vec<Edition> = self.schemas.keys().map(|(e, _)| *e).collect();
        out.sort();
        out.dedup();
        out
    }

    /// Parses `text` (the file `name` in the archive) and validates it as a document of
    /// `role`, against the edition its root element's namespace selects. Malformed XML is the
    /// error; schema errors are the [`Validated`] findings.
    pub fn validate(
        &mut self,
        role: Role,
        name: &str,
        text: &[u8],
    ) -> Result<(Tree, Validated), Finding> {
        // Most files are of the current edition: validated against it as they are parsed, and
        // parsed again only when their root says otherwise.
        let (first, _, findings) = self.run(Edition::Current, role, name, text)?;
        let root = first.root();
        let namespace = root.and_then(|r| r.namespace());
        if role.is_cda() || namespace == Some(NS_CDA) {
            let edition = None;
            return Ok((first, Validated { edition, findings }));
        }
        if namespace == Some(NS_CURRENT) {
            let edition = Some(Edition::Current);
            return Ok((first, Validated { edition, findings }));
        }
        let editions = namespace.map_or(&[][..], Edition::of_namespace);
        let mut best: Option<(usize, Tree, Validated)> = None;
        for &edition in editions {
            if !self.schemas.contains_key(&(edition, role)) {
                continue;
            }
            let (tree, errors, findings) = self.run(edition, role, name, text)?;
            let result = Validated {
                edition: Some(edition),
                findings,
            };
            if errors == 0 {
                return Ok((tree, result));
            }
            if best.as_ref().is_none_or(|(fewest, _, _)| errors < *fewest) {
                best = Some((errors, tree, result));
            }
        }
        if let Some((_, tree, result)) = best {
            return Ok((tree, result));
        }
        let mut r = Finding::new(
            Rule::EditionUnknown,
            match namespace {
                Some(ns) if !editions.is_empty() => format!(
                    "the root element's namespace {ns} is of an edition without a {} schema \
                     installed",
                    role.root()
                ),
                Some(ns) => format!("the root element's namespace {ns} is of no known edition"),
                None => "the root element has no namespace: it is of no known edition".into(),
            },
        )
        .in_file(name);
        r.line = root.and_then(|r| r.line());
        let findings = vec![r];
        Ok((
            first,
            Validated {
                edition: None,
                findings,
            },
        ))
    }

    /// Parses and validates `text` against one edition's schema: the tree, the number of schema
    /// errors and the first ones as findings.
    fn run(
        &mut self,
        edition: Edition,
        role: Role,
        name: &str,
        text: &[u8],
    ) -> Result<(Tree, usize, Vec<Finding>), Finding> {
        let Some(context) = self.schemas.get_mut(&(edition, role)) else {
            return Ok((xml::parse(name, text)?, 0, Vec::new()));
        };
        let (tree, errors) = xml::parse_valid(name, text, context)?;
        let findings = errors
            .iter()
            .take(MAX_FINDINGS_PER_FILE)
            .map(|e| xml::finding(Rule::XsdInvalid, name, e))
            .collect();
        Ok((tree, errors.len(), findings))
    }
}

fn compile(file: &Path, shown_as: Option<&str>) -> Result<SchemaValidationContext, SchemaError> {
    let shown = || shown_as.map_or_else(|| file.to_path_buf(), PathBuf::from);
    let Some(path) = file.to_str() else {
        return Err(SchemaError {
            file: shown(),
            detail: "the path is not UTF-8".into(),
        });
    };
    let mut parser = SchemaParserContext::from_file(path);
    SchemaValidationContext::from_parser(&mut parser).map_err(|errors| SchemaError {
        detail: errors
            .first()
            .and_then(|e| e.message.as_deref())
            .map(|m| m.trim().to_owned())
            .unwrap_or_else(|| "the schema does not compile".into()),
        file: shown(),
    })
}

/// A private temporary folder (mode 0700), removed when dropped.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new(label: &str) -> std::io::Result<PrivateDir> {
        let path = std::env::temp_dir().join(format!(
            "handoff-{label}-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(PrivateDir(path))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Compiles the intermediate edition's schemas from the derived texts, written for the time of
/// the compilation to a private temporary folder (libxml2 resolves `xs:include` from files).
fn compile_intermediate(
    derived: &[(&'static str, String)],
    schema_dir: &Path,
) -> Result<Vec<(Role, SchemaValidationContext)>, SchemaError> {
    let io_error = |e: std::io::Error| SchemaError {
        file: schema_dir.join(SET_CURRENT.folder),
        detail: format!("deriving the intermediate edition: {e}"),
    };
    let tmp = PrivateDir::new("intermediate").map_err(io_error)?;
    for (name, text) in derived {
        fs::write(tmp.0.join(name), text).map_err(io_error)?;
    }
    let mut out = Vec::new();
    for role in [
        Role::Index,
        Role::Summary,
        Role::CheckupClaim,
        Role::GuidanceClaim,
    ] {
        let shown = format!(
            "{} (intermediate edition, derived)",
            schema_dir
                .join(SET_CURRENT.folder)
                .join(role.schema_file())
                .display()
        );
        out.push((
            role,
            compile(&tmp.0.join(role.schema_file()), Some(&shown))?,
        ));
    }
    Ok(out)
}

thread_local! {
    static CATALOG: RefCell<Option<(PathBuf, Catalog)>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's catalogue for `schema_dir`, compiling it on first use (and
/// again when the directory changes).
pub fn with_catalog<T>(
    schema_dir: &Path,
    f: impl FnOnce(&mut Catalog) -> T,
) -> Result<T, SchemaError> {
    CATALOG.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(d, _)| d != schema_dir) {
            *slot = Some((schema_dir.to_path_buf(), Catalog::load(schema_dir)?));
        }
        let (_, catalog) = slot.as_mut().expect("filled above");
        Ok(f(catalog))
    })
}

// ---------------------------------------------------------------------------------------------
// Installing a set

/// Limits on what `install` reads from a folder or zip: the official sets are about 1 MB.
const MAX_SOURCE_FILE: u64 = 16 << 20;
const MAX_SOURCE_TOTAL: u64 = 256 << 20;
const MAX_SOURCE_ENTRIES: usize = 100_000;

/// Why nothing was installed; one line per problem.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct InstallError(pub Vec<String>);

impl InstallError {
    fn one(message: impl Into<String>) -> InstallError {
        InstallError(vec![message.into()])
    }
}

/// One set `install` put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub set: &'static OfficialSet,
    /// The set's folder, `to/<folder>`.
    pub dir: PathBuf,
    /// Where in the source it was found (`/`-separated, empty for the source's top).
    pub source: String,
    pub files: usize,
    /// Files whose CRLF line ends were converted to match the pins.
    pub converted: Vec<String>,
    /// A previous installation of the set was replaced.
    pub replaced: bool,
}

/// Installs every official set found in `from` (a folder or a `.zip`, the set possibly nested,
/// e.g. in an archive's `XSD/` folder) into `to/<set folder>/`. A set is identified by its
/// `ix08_V08.xsd` and must hold every pinned file with the pinned hash (CRLF line ends are
/// converted); otherwise, or when a zip entry has an unsafe path, nothing is installed. Each set
/// is written to a temporary folder beside its place and renamed into it (files mode 0644).
pub fn install(from: &Path, to: &Path) -> Result<Vec<Installed>, InstallError> {
    let files = read_source(from)?;
    let roots: Vec<String> = files
        .keys()
        .filter_map(|p| {
            let (dir, name) = p.rsplit_once('/').unwrap_or(("", p.as_str()));
            (name == "ix08_V08.xsd").then(|| dir.to_owned())
        })
        .collect();
    if roots.is_empty() {
        return Err(InstallError::one(format!(
            "{}: no ix08_V08.xsd: not an MHLW schema set (nothing installed)",
            from.display()
        )));
    }
    let mut problems = Vec::new();
    let mut found: Vec<Found> = Vec::new();
    for root in roots {
        let prefix = if root.is_empty() {
            String::new()
        } else {
            format!("{root}/")
        };
        let shown = |path: &str| format!("{}:{prefix}{path}", from.display());
        let ix = &files[&format!("{prefix}ix08_V08.xsd")];
        let Some(set) = SETS.into_iter().find(|s| {
            s.pin("ix08_V08.xsd")
                .is_some_and(|pin| check_bytes(pin, ix) == FileStatus::Pinned || line_ends(pin, ix))
        }) else {
            problems.push(format!(
                "{}: sha256 {} is the ix08 of no pinned set (a different release of the MHLW \
                 schemas?)",
                shown("ix08_V08.xsd"),
                sha256_hex(ix)
            ));
            continue;
        };
        if found.iter().any(|f| std::ptr::eq(f.set, set)) {
            continue;
        }
        let mut out = Vec::new();
        let mut converted = Vec::new();
        for pin in set.files {
            let Some(bytes) = files.get(&format!("{prefix}{}", pin.path)) else {
                problems.push(format!(
                    "{}: missing from the {} set",
                    shown(pin.path),
                    set.folder
                ));
                continue;
            };
            match check_bytes(pin, bytes) {
                FileStatus::Pinned => out.push((pin.path, bytes.clone())),
                FileStatus::Differs {
                    line_ends_only: true,
                    ..
                } => {
                    out.push((pin.path, without_crs(bytes).expect("has CRLF")));
                    converted.push(pin.path.to_owned());
                }
                FileStatus::Differs { found, .. } => problems.push(format!(
                    "{}: sha256 {found} is not the pinned {} of {}/{}",
                    shown(pin.path),
                    pin.sha256,
                    set.folder,
                    pin.path
                )),
                _ => unreachable!("check_bytes reports Pinned or Differs"),
            }
        }
        found.push(Found {
            set,
            source: root,
            files: out,
            converted,
        });
    }
    if !problems.is_empty() {
        problems.push("nothing was installed".into());
        return Err(InstallError(problems));
    }
    let mut installed = Vec::new();
    for Found {
        set,
        source,
        files,
        converted,
    } in found
    {
        let (dir, replaced) = write_set(to, set, &files).map_err(|e| {
            InstallError::one(format!("writing {}: {e}", to.join(set.folder).display()))
        })?;
        installed.push(Installed {
            set,
            dir,
            source,
            files: files.len(),
            converted,
            replaced,
        });
    }
    Ok(installed)
}

/// A set found in the source, every pinned file checked.
struct Found {
    set: &'static OfficialSet,
    source: String,
    files: Vec<(&'static str, Vec<u8>)>,
    converted: Vec<String>,
}

fn line_ends(pin: &Pin, bytes: &[u8]) -> bool {
    matches!(
        check_bytes(pin, bytes),
        FileStatus::Differs {
            line_ends_only: true,
            ..
        }
    )
}

/// The `.xsd` files of a folder or zip by `/`-separated relative path.
fn read_source(from: &Path) -> Result<BTreeMap<String, Vec<u8>>, InstallError> {
    let meta =
        fs::metadata(from).map_err(|e| InstallError::one(format!("{}: {e}", from.display())))?;
    let mut out = BTreeMap::new();
    let mut total = 0u64;
    let mut take =
        |path: String, size: u64, out: &mut BTreeMap<String, Vec<u8>>, read: &mut dyn Read| {
            let too_large = || {
                InstallError::one(format!(
                    "{}:{path}: too large for a schema file",
                    from.display()
                ))
            };
            if size > MAX_SOURCE_FILE {
                return Err(too_large());
            }
            // The size a zip declares may lie: what is read counts.
            let mut bytes = Vec::new();
            read.take(MAX_SOURCE_FILE + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| InstallError::one(format!("{}:{path}: {e}", from.display())))?;
            if bytes.len() as u64 > MAX_SOURCE_FILE {
                return Err(too_large());
            }
            total += bytes.len() as u64;
            if total > MAX_SOURCE_TOTAL {
                return Err(InstallError::one(format!(
                    "{}: more than {MAX_SOURCE_TOTAL} bytes of schema files",
                    from.display()
                )));
            }
            out.insert(path, bytes);
            Ok(())
        };
    if meta.is_dir() {
        let mut paths = Vec::new();
        schema_files_under(from, "", &mut paths);
        if paths.len() > MAX_SOURCE_ENTRIES {
            return Err(InstallError::one(format!(
                "{}: too many files",
                from.display()
            )));
        }
        for path in paths {
            let file = from.join(&path);
            let mut f = fs::File::open(&file)
                .map_err(|e| InstallError::one(format!("{}: {e}", file.display())))?;
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            take(path, size, &mut out, &mut f)?;
        }
        return Ok(out);
    }
    let file =
        fs::File::open(from).map_err(|e| InstallError::one(format!("{}: {e}", from.display())))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| InstallError::one(format!("{}: not a readable zip: {e}", from.display())))?;
    if zip.len() > MAX_SOURCE_ENTRIES {
        return Err(InstallError::one(format!(
            "{}: too many entries",
            from.display()
        )));
    }
    let unsafe_names: Vec<String> = zip
        .file_names()
        .filter_map(|n| match n {
            Ok(n) if safe_entry_name(&n) => None,
            Ok(n) => Some(format!(
                "{}: entry {n:?} has an unsafe path",
                from.display()
            )),
            Err(e) => Some(format!(
                "{}: an entry's name is unreadable: {e}",
                from.display()
            )),
        })
        .collect();
    if !unsafe_names.is_empty() {
        let mut problems = unsafe_names;
        problems.push("nothing was installed".into());
        return Err(InstallError(problems));
    }
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| InstallError::one(format!("{}: entry {i}: {e}", from.display())))?;
        let name = entry
            .name()
            .map_err(|e| InstallError::one(format!("{}: entry {i}: {e}", from.display())))?
            .into_owned();
        if entry.is_dir() || !name.to_ascii_lowercase().ends_with(".xsd") {
            continue;
        }
        let size = entry.size();
        take(name, size, &mut out, &mut entry)?;
    }
    Ok(out)
}

/// A zip entry name that stays inside the folder it is extracted to.
fn safe_entry_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\\')
        && !name.contains('\0')
        && !name.contains(':')
        && name
            .trim_end_matches('/')
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Writes `files` to a temporary folder in `to` and renames it to `to/<folder>` (exchanging it
/// with an existing installation, which is then removed). Returns the folder and whether one
/// was replaced.
fn write_set(
    to: &Path,
    set: &OfficialSet,
    files: &[(&'static str, Vec<u8>)],
) -> std::io::Result<(PathBuf, bool)> {
    fs::create_dir_all(to)?;
    let target = to.join(set.folder);
    let tmp = to.join(format!(
        ".{}.install-{}",
        set.folder,
        uuid::Uuid::now_v7().simple()
    ));
    let result = (|| {
        fs::DirBuilder::new().mode(0o755).create(&tmp)?;
        for (path, bytes) in files {
            let file = tmp.join(path);
            if let Some(parent) = file.parent()
                && !parent.is_dir()
            {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .recursive(true)
                    .create(parent)?;
                fs::set_permissions(parent, fs::Permissions::from_mode(0o755))?;
            }
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&file)?;
            f.write_all(bytes)?;
            f.set_permissions(fs::Permissions::from_mode(0o644))?;
            f.sync_all()?;
        }
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        for dir in ["coreschemas", ""] {
            fs::File::open(tmp.join(dir))?.sync_all()?;
        }
        let replaced = if target.exists() {
            crate::sys::exchange(&tmp, &target)?;
            true
        } else {
            fs::rename(&tmp, &target)?;
            false
        };
        fs::File::open(to)?.sync_all()?;
        Ok(replaced)
    })();
    // After an exchange `tmp` holds the previous installation; after a failure, the partial one.
    let _ = fs::remove_dir_all(&tmp);
    result.map(|replaced| (target, replaced))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editions_by_id_and_namespace() {
        for e in Edition::ALL {
            assert_eq!(Edition::from_id(e.id()), Some(e));
        }
        assert_eq!(Edition::from_id("2017"), None);
        assert_eq!(Edition::of_namespace(NS_CURRENT), &[Edition::Current]);
        assert_eq!(
            Edition::of_namespace(NS_2007),
            &[Edition::V2007, Edition::Intermediate]
        );
        assert!(Edition::of_namespace("urn:example").is_empty());
        assert_eq!(Edition::Intermediate.folder(), "mhlw-v08");
        assert_eq!(Edition::V2007.folder(), "mhlw-v08-2007ns");
        assert_eq!(Edition::V2007.name_ja(), "2007年版");
    }

    #[test]
    fn pins_are_well_formed() {
        for set in SETS {
            assert_eq!(OfficialSet::by_folder(set.folder), Some(set));
            for pin in set.files {
                assert_eq!(pin.sha256.len(), 64, "{}", pin.path);
                assert!(
                    pin.sha256
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                );
            }
            for role in [
                Role::Index,
                Role::Summary,
                Role::CheckupClaim,
                Role::CheckupCda,
            ] {
                assert!(
                    set.pin(role.schema_file()).is_some(),
                    "{} {role:?}",
                    set.folder
                );
            }
        }
        // The CDA schema is the same file in both sets.
        assert_eq!(
            SET_CURRENT.pin("hc08_V08.xsd").map(|p| p.sha256),
            SET_2007.pin("hc08_V08.xsd").map(|p| p.sha256)
        );
        for name in INTERMEDIATE_FILES {
            assert!(SET_CURRENT.pin(name).is_some(), "{name}");
        }
    }

    #[test]
    fn intermediate_replaces_the_namespace_only() {
        let text = format!(
            "<xs:schema xmlns=\"{NS_CURRENT}\" xmlns:xs=\"x\" targetNamespace=\"{NS_CURRENT}\">\
             <xs:include schemaLocation=\"co08_V08.xsd\"/></xs:schema>"
        );
        let derived = derive_intermediate("ix08_V08.xsd", &text).unwrap();
        assert_eq!(derived, text.replace(NS_CURRENT, NS_2007));
        assert!(derive_intermediate("x.xsd", "<xs:schema/>").is_err());
        let extra = format!("{text}<!-- {NS_CURRENT} -->");
        assert!(derive_intermediate("x.xsd", &extra).is_err());
    }

    #[test]
    fn line_ends_are_recognised() {
        let lf = b"<a>\n</a>\n";
        let pin = Pin {
            path: "a.xsd",
            sha256: Box::leak(sha256_hex(lf).into_boxed_str()),
        };
        assert_eq!(check_bytes(&pin, lf), FileStatus::Pinned);
        assert!(line_ends(&pin, b"<a>\r\n</a>\r\n"));
        assert!(!line_ends(&pin, b"<b>\r\n</b>\r\n"));
    }

    #[test]
    fn unsafe_zip_names() {
        for bad in [
            "../x.xsd",
            "a/../../x.xsd",
            "/etc/x.xsd",
            "a\\..\\x.xsd",
            "C:x.xsd",
            "a//x.xsd",
            "./x.xsd",
            "",
        ] {
            assert!(!safe_entry_name(bad), "{bad:?}");
        }
        for good in ["XSD/ix08_V08.xsd", "a/XSD/coreschemas/", "ix08_V08.xsd"] {
            assert!(safe_entry_name(good), "{good:?}");
        }
    }
}
