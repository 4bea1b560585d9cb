//! Throughput of sealing: at-rest STREAM seal and open, and CMS sealing for an RSA recipient,
//! over one large file on disk. Prints MiB/s and the process's peak RSS. Run by `bench/seal`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::time::Instant;

use handoff::keys::MasterKey;
use handoff::seal::at_rest;

mod common;

use common::peak_rss_kib;

fn main() {
    let input =
        std::env::var("SEAL_BENCH_INPUT").expect("SEAL_BENCH_INPUT: path of the file to seal");
    let cert = std::env::var("SEAL_BENCH_CERT").expect("SEAL_BENCH_CERT: recipient certificate");
    let dir = std::path::Path::new(&input).parent().unwrap().to_path_buf();
    let len = std::fs::metadata(&input).unwrap().len();
    let mib = len as f64 / (1 << 20) as f64;
    let master = MasterKey::from_bytes([42; 32]);
    let sealed_path = dir.join("at-rest.bin");

    let t = Instant::now();
    let out = BufWriter::with_capacity(1 << 20, File::create(&sealed_path).unwrap());
    at_rest::seal(
        &master,
        "bench",
        BufReader::with_capacity(1 << 20, File::open(&input).unwrap()),
        out,
    )
    .unwrap();
    println!(
        "at-rest seal   {:8.0} MiB/s",
        mib / t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let mut r = at_rest::AtRestReader::new(
        &master,
        "bench",
        BufReader::with_capacity(1 << 20, File::open(&sealed_path).unwrap()),
    )
    .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    assert_eq!(n, len);
    println!(
        "at-rest open   {:8.0} MiB/s",
        mib / t.elapsed().as_secs_f64()
    );
    std::fs::remove_file(&sealed_path).unwrap();

    let recipient = handoff::seal::Recipient::from_file(std::path::Path::new(&cert)).unwrap();
    let cms_path = dir.join("handoff.p7m");
    let t = Instant::now();
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&cms_path).unwrap());
    handoff::seal::seal_for(
        &[recipient],
        len,
        BufReader::with_capacity(1 << 20, File::open(&input).unwrap()),
        &mut out,
    )
    .unwrap();
    out.flush().unwrap();
    println!(
        "CMS seal       {:8.0} MiB/s",
        mib / t.elapsed().as_secs_f64()
    );
    println!("peak RSS       {:8} KiB", peak_rss_kib());
}
