//! Throughput of sealing: at-rest STREAM seal and open, and CMS sealing for an RSA recipient,
//! over one large file on disk. Prints MiB/s and the process's peak RSS. Run by `bench/seal`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::time::Instant;

use handoff::keys::MasterKey;
use handoff::seal::at_rest;

mod common;

use common::peak_rss_kib;

/// Room for the at-rest header beyond the per-segment tags.
const HEADER_ROOM: usize = 64;

/// Writes dirty pages back between phases, so that no phase is timed against the previous
/// one's writeback.
fn settle() {
    nix::unistd::sync();
}

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

    settle();
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

    settle();
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

    // The format's own speed, without the page cache: 256 MiB sealed from memory into memory
    // and opened again (after the RSS figure above, which these buffers would swamp).
    let plain = vec![0x5a_u8; 256 << 20];
    let mem_mib = plain.len() as f64 / (1 << 20) as f64;
    // Output memory touched beforehand: page faults are not the format's cost.
    let mut sealed = vec![0xff_u8; plain.len() + plain.len() / 1024 + HEADER_ROOM];
    let t = Instant::now();
    let mut out = std::io::Cursor::new(&mut sealed[..]);
    at_rest::seal(&master, "memory", &plain[..], &mut out).unwrap();
    let sealed_len = out.position() as usize;
    println!(
        "at-rest seal, memory to memory {:8.0} MiB/s",
        mem_mib / t.elapsed().as_secs_f64()
    );
    let sealed = &sealed[..sealed_len];
    let t = Instant::now();
    let n = at_rest::open(
        &master,
        "memory",
        std::io::Cursor::new(sealed),
        std::io::sink(),
    )
    .unwrap();
    assert_eq!(n, plain.len() as u64);
    println!(
        "at-rest open, memory to memory {:8.0} MiB/s",
        mem_mib / t.elapsed().as_secs_f64()
    );
}
