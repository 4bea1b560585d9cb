//! Throughput of the schema check on one core: 100-person checkup archives checked one after
//! another on this thread, as a pipeline worker does. Prints archives/s, MB/s (compressed and
//! unpacked) and the process's peak RSS. Run by `bench/validate`.

use std::time::Instant;

use handoff::config::Config;
use handoff::validate::testdata::{self, Spec};
use handoff::validate::{self, Checked};

mod common;

use common::{peak_rss_kib, thread_cpu_secs};

fn main() {
    let config_path = std::env::var("VALIDATE_BENCH_CONFIG").expect("VALIDATE_BENCH_CONFIG");
    let persons: usize = std::env::var("VALIDATE_BENCH_PERSONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let count: usize = std::env::var("VALIDATE_BENCH_ARCHIVES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let config: Config = handoff::config::load(std::path::Path::new(&config_path))
        .expect("config")
        .config;
    let sender = config
        .counterpart("clinic-1312345679")
        .expect("example clinic");
    let today = validate::today(config.gateway.utc_offset());
    let spec = Spec::example(persons, today.previous_day().expect("date"));
    let name = spec.archive_name().file_name();
    // The archives wait on disk, as in the spool: what is measured holds one at a time.
    let dir = std::env::temp_dir().join(format!("handoff-validate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let paths: Vec<std::path::PathBuf> = (0..count)
        .map(|i| {
            let spec = Spec {
                seed: i as u64 + 1,
                ..spec.clone()
            };
            let path = dir.join(format!("{i}.zip"));
            let file = std::io::BufWriter::new(std::fs::File::create(&path).expect("archive"));
            testdata::write_valid(&spec, file).expect("generate");
            path
        })
        .collect();
    let compressed: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let unpacked: u64 = paths
        .iter()
        .map(|p| {
            let file = std::fs::File::open(p).expect("archive");
            let z = zip::ZipArchive::new(std::io::BufReader::new(file)).expect("zip");
            (0..z.len())
                .map(|i| z.by_index_data(i).map(|e| e.size()).unwrap_or(0))
                .sum::<u64>()
        })
        .sum();
    let check = |p: &std::path::Path| {
        let file = std::io::BufReader::new(std::fs::File::open(p).expect("archive"));
        validate::check_upload(file, &name, sender, &config).expect("schemas")
    };
    let valid = |c: Checked| matches!(c, Checked::Valid { warnings, .. } if warnings.is_empty());
    // Compile the schemas before timing, as a worker has after its first archive.
    assert!(valid(check(&paths[0])));
    let started = Instant::now();
    let cpu_started = thread_cpu_secs();
    for p in &paths {
        assert!(valid(check(p)));
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = thread_cpu_secs() - cpu_started;
    let mb = |b: f64| b / 1e6;
    println!(
        "{count} archives of {persons} persons ({:.0} KB zipped, {:.0} KB unpacked each), one core: \
         {:.1} archives/s ({:.1} per CPU second, {:.2} ms CPU each), {:.1} MB/s zipped, \
         {:.1} MB/s unpacked; peak RSS {} KiB",
        compressed as f64 / count as f64 / 1e3,
        unpacked as f64 / count as f64 / 1e3,
        count as f64 / secs,
        count as f64 / cpu,
        cpu * 1e3 / count as f64,
        mb(compressed as f64) / secs,
        mb(unpacked as f64) / secs,
        peak_rss_kib()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
