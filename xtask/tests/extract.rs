//! `cargo xtask extract` and `merge` as a user runs them: a job killed with SIGKILL resumes to the same bytes,
//! shards merge to the same bytes as one job, and mistakes are reported, not panicked on.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;

use common::{cache, repo};

/// `xtask extract <model…> --input <input> --output <output>` plus `extra`, on the test cache.
fn extract_with(model: &[&str], input: &Path, output: &Path, extra: &[&str]) -> Command {
    extract_on(&cache(), model, input, output, extra)
}

/// [`extract_with`] on the cache `cache`.
fn extract_on(
    cache: &Path,
    model: &[&str],
    input: &Path,
    output: &Path,
    extra: &[&str],
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command
        .current_dir(repo())
        .arg("extract")
        .args(model)
        .args(["--no-progress", "--input"])
        .arg(input)
        .arg("--output")
        .arg(output)
        .arg("--cache-dir")
        .arg(cache)
        .args(extra)
        .env_remove("ORT_DYLIB_PATH");
    command
}

/// The tiny fixture model, reading the `text` column.
const TINY_MODEL: [&str; 6] = [
    "--model",
    "fixtures/models/tiny-embedder.onnx",
    "--tokenizer",
    "fixtures/models/tiny-tokenizer.json",
    "--text-column",
    "text",
];

/// `xtask extract` with the tiny fixture model on `input`, plus `extra` arguments.
fn extract_command(input: &Path, output: &Path, extra: &[&str]) -> Command {
    extract_with(&TINY_MODEL, input, output, extra)
}

/// `cargo xtask merge <parts> --output <output>`.
fn merge_command(parts: &Path, output: impl AsRef<Path>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command
        .arg("merge")
        .arg(parts)
        .arg("--output")
        .arg(output.as_ref());
    command
}

fn ok(output: Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    text
}

fn user_error(output: Output, fragments: &[&str]) {
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: ") && !err.contains("panicked"),
        "{err}"
    );
    for fragment in fragments {
        assert!(err.contains(fragment), "expected `{fragment}` in:\n{err}");
    }
}

/// A generated corpus: `rows` texts of 1 to 40 words, with ids (deterministic).
fn corpus(dir: &Path, rows: usize) -> PathBuf {
    let words = [
        "a",
        "wonderful",
        "and",
        "moving",
        "film",
        "dull",
        "boring",
        "great",
        "acting",
        "story",
        "bad",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut csv = String::from("id,text\n");
    for i in 0..rows {
        let n = 1 + next() % 40;
        let text: Vec<&str> = (0..n)
            .map(|_| words[(next() % words.len() as u64) as usize])
            .collect();
        csv.push_str(&format!("doc-{i},{}\n", text.join(" ")));
    }
    let path = dir.join("corpus.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

fn chunk_files(work: &Path) -> usize {
    std::fs::read_dir(work).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("chunk-"))
        })
        .count()
    })
}

#[test]
fn a_job_killed_mid_run_resumes_to_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let input = corpus(dir.path(), 30_000);
    // Two sessions on two threads: chunks finish out of order, and the output must not care.
    let chunking = [
        "--id-column",
        "id",
        "--chunk-rows",
        "200",
        "--threads",
        "2",
        "--sessions",
        "2",
    ];

    let reference = dir.path().join("reference.parquet");
    ok(extract_command(&input, &reference, &chunking)
        .output()
        .unwrap());

    let output = dir.path().join("out.parquet");
    let work = dir.path().join(".out.parquet.partial");
    let mut child = extract_command(&input, &output, &chunking).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while chunk_files(&work) < 5 {
        assert!(Instant::now() < deadline, "no chunks appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let kept = chunk_files(&work);
    assert!(
        (5..150).contains(&kept),
        "killed mid-run: {kept} of 150 chunks"
    );
    assert!(
        !output.exists(),
        "no output under the final name before the job completes"
    );
    // Damage a finished chunk in place, keeping its size: on main it was only row-counted, so the flipped
    // bytes went into the output and its recorded sha256.
    let damaged = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("chunk-")
        })
        .unwrap();
    let mut bytes = std::fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&damaged, bytes).unwrap();

    let resumed = ok(extract_command(&input, &output, &chunking)
        .output()
        .unwrap());
    assert!(
        resumed.contains("kept from the interrupted run"),
        "{resumed}"
    );
    assert!(
        resumed.contains("damaged or unverified; extracting it again"),
        "{resumed}"
    );
    assert_eq!(
        std::fs::read(&output).unwrap(),
        std::fs::read(&reference).unwrap(),
        "the resumed file differs from an uninterrupted run's"
    );
    assert!(!work.exists(), "the work folder is removed once done");

    let again = ok(extract_command(&input, &output, &chunking)
        .output()
        .unwrap());
    assert!(again.contains("already complete"), "{again}");
}

#[test]
fn shards_merge_to_the_bytes_of_one_job_in_parquet_and_npy() {
    let dir = tempfile::tempdir().unwrap();
    let input = repo().join("fixtures/data/tiny-sentiment.csv");
    // 40 rows: 6 chunks over 4 shards, uneven on purpose.
    let chunking = ["--chunk-rows", "7"];

    for (name, extra) in [
        ("one.parquet", &["--id-column", "id"][..]),
        ("one.npy", &[][..]),
    ] {
        let single = dir.path().join(name);
        let args: Vec<&str> = chunking.iter().chain(extra).copied().collect();
        let mut one_session = args.clone();
        one_session.extend(["--threads", "1"]);
        ok(extract_command(&input, &single, &one_session)
            .output()
            .unwrap());

        let parts = dir.path().join(format!("parts-{name}"));
        for i in 0..4 {
            let shard = format!("{i}/4");
            // The shards run with two sessions each; the bytes must still match the one-session job.
            let mut args = args.clone();
            args.extend(["--shard", &shard, "--threads", "2", "--sessions", "2"]);
            ok(extract_command(&input, &parts, &args).output().unwrap());
            assert!(
                parts
                    .join(format!("part-0000{i}-of-00004.parquet"))
                    .is_file()
            );
        }
        let merged = dir.path().join(format!("merged-{name}"));
        let out = ok(merge_command(&parts, &merged).output().unwrap());
        assert!(out.contains("merged 4 parts: 40 rows"), "{out}");
        assert_eq!(
            std::fs::read(&merged).unwrap(),
            std::fs::read(&single).unwrap(),
            "{name}: merged shards differ from one job"
        );
        // Merging again onto the finished file is refused, as extract refuses (main overwrote it).
        user_error(
            merge_command(&parts, &merged).output().unwrap(),
            &["exists", "delete it, or choose another --output"],
        );
    }
    let npy = std::fs::read(dir.path().join("one.npy")).unwrap();
    assert!(npy.starts_with(b"\x93NUMPY\x01\x00"));
    let header = String::from_utf8_lossy(&npy[10..128]);
    assert!(header.contains("'shape': (40, 8)"), "{header}");
}

#[test]
fn a_shard_without_chunks_succeeds_and_merges() {
    // 40 rows in 16-row chunks are 3 chunks: shard 3/4 owns none (an array job of fixed size on a small
    // input). It must succeed, leave no part file, and the merge must still equal one job's bytes.
    let dir = tempfile::tempdir().unwrap();
    let input = repo().join("fixtures/data/tiny-sentiment.csv");
    let single = dir.path().join("one.parquet");
    ok(
        extract_command(&input, &single, &["--chunk-rows", "16", "--threads", "1"])
            .output()
            .unwrap(),
    );
    let parts = dir.path().join("parts");
    for i in 0..4 {
        let shard = format!("{i}/4");
        let out = ok(extract_command(
            &input,
            &parts,
            &["--chunk-rows", "16", "--threads", "1", "--shard", &shard],
        )
        .output()
        .unwrap());
        if i == 3 {
            assert!(
                out.contains("shard 3/4: no rows (40 rows make 3 chunks of 16"),
                "{out}"
            );
        }
    }
    assert!(!parts.join("part-00003-of-00004.parquet").exists());
    assert!(parts.join("part-00003-of-00004.parquet.json").is_file());
    let merged = dir.path().join("merged.parquet");
    let out = ok(merge_command(&parts, &merged).output().unwrap());
    assert!(out.contains("merged 4 parts: 40 rows"), "{out}");
    assert_eq!(
        std::fs::read(&merged).unwrap(),
        std::fs::read(&single).unwrap()
    );
}

#[test]
fn merge_names_missing_parts_and_extract_reports_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let input = repo().join("fixtures/data/tiny-sentiment.csv");
    let parts = dir.path().join("parts");
    ok(
        extract_command(&input, &parts, &["--chunk-rows", "7", "--shard", "1/3"])
            .output()
            .unwrap(),
    );
    let merged = merge_command(&parts, dir.path().join("all.parquet"))
        .output()
        .unwrap();
    user_error(
        merged,
        &["2 of 3 parts are missing or unfinished: 0/3, 2/3"],
    );

    let out = dir.path().join("x.parquet");
    let wrong_column = extract_command(&input, &out, &["--id-column", "key"]);
    user_error(
        { wrong_column }.output().unwrap(),
        &["column `key` not found; the table has: id, text, label"],
    );
    let npy_with_ids = extract_command(&input, &dir.path().join("x.npy"), &["--id-column", "id"]);
    user_error(
        { npy_with_ids }.output().unwrap(),
        &[
            "--id-column has nowhere to go",
            "hint: write a .parquet file",
        ],
    );
    let bad_shard = extract_command(&input, &parts, &["--shard", "3/3"]);
    let output = { bad_shard }.output().unwrap();
    assert_eq!(output.status.code(), Some(2), "clap rejects the value");
    assert!(String::from_utf8_lossy(&output.stderr).contains("the index counts from 0"));
    let jsonl = repo().join("fixtures/data/bad-lines.jsonl");
    user_error(
        extract_command(&jsonl, &dir.path().join("j.parquet"), &[])
            .output()
            .unwrap(),
        &["bad-lines.jsonl:3: key `text` holds 5, expected a string"],
    );
}

#[test]
fn a_folder_of_images_is_embedded_by_an_image_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("images.parquet");
    let images = repo().join("fixtures/data/tiny-images");
    let lite0 = ["--model", "efficientnet-lite0"];
    let command = extract_with(&lite0, &images, &output, &["--chunk-rows", "3"]);
    let out = ok({ command }.output().unwrap());
    assert!(
        out.contains("8 rows → ") && out.contains("(1280-d"),
        "{out}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("images.parquet.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["rows"], 8);
    assert_eq!(manifest["dimension"], 1280);
    assert_eq!(manifest["identity"]["settings"]["crop"], 224, "{manifest}");
    assert_eq!(
        manifest["identity"]["settings"]["layout"], "nchw",
        "{manifest}"
    );

    // The wrong modality either way round is explained.
    let csv = repo().join("fixtures/data/tiny-sentiment.csv");
    let image_model_on_table = extract_with(&lite0, &csv, &dir.path().join("x.parquet"), &[]);
    user_error(
        { image_model_on_table }.output().unwrap(),
        &["is an image backbone; --input must be a folder of images"],
    );
    let text_model_on_images = extract_command(&images, &dir.path().join("y.parquet"), &[]);
    user_error(
        { text_model_on_images }.output().unwrap(),
        &["is a folder of images, and `tiny-embedder.onnx` is not an image backbone"],
    );
}

/// A small tmpfs that fills up while the job writes (mounting needs root, as CI and these machines run).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: usize) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .ok()?;
        status.status.success().then_some(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_ends_the_job_promptly_with_the_os_error_and_the_path() {
    // On main the writer's error was swallowed and every thread parked on a channel: the job never ended.
    let Some(disk) = SmallDisk::mount(256 * 1024) else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI runs as root and must mount the small disk"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let output = disk.dir.path().join("out.parquet");
    let err = extract_until_it_fails(scratch.path(), &output, |c| c);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains(&disk.dir.path().display().to_string()),
        "{err}"
    );
    assert!(!output.exists(), "no half-written output");
}

#[test]
fn a_write_refused_by_a_file_size_limit_ends_the_job_promptly_with_the_os_error_and_the_path() {
    // The same fault without root: `ulimit -f` makes a write past 128 KiB fail with EFBIG (SIGXFSZ ignored),
    // as a full disk or a quota would.
    let scratch = tempfile::tempdir().unwrap();
    let output = scratch.path().join("out.parquet");
    let err = extract_until_it_fails(scratch.path(), &output, |command| {
        let mut limited = Command::new("sh");
        limited
            .arg("-c")
            .arg("trap '' XFSZ; ulimit -f 256; exec \"$0\" \"$@\"")
            .arg(command.get_program())
            .args(command.get_args())
            .current_dir(repo())
            .env_remove("ORT_DYLIB_PATH");
        limited
    });
    assert!(err.contains("File too large"), "{err}");
    assert!(err.contains(&scratch.path().display().to_string()), "{err}");
    assert!(!output.exists(), "no half-written output");
}

/// Extracts a 20,000-row corpus into `output` through `wrap(command)`, which must fail within two minutes
/// (a hang panics); returns its error output.
fn extract_until_it_fails(
    scratch: &Path,
    output: &Path,
    wrap: impl Fn(Command) -> Command,
) -> String {
    let input = corpus(scratch, 20_000);
    let mut child = wrap(extract_command(
        &input,
        output,
        &["--chunk-rows", "1024", "--threads", "1"],
    ))
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("extract hung after a failed write");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(status.code(), Some(1), "{err}");
    err
}

#[test]
fn an_unbalanced_quote_is_refused_with_its_line_instead_of_shifting_rows() {
    // On main this returned 39 rows for 40, every row after the stray quote shifted by one.
    let scratch = tempfile::tempdir().unwrap();
    let output = scratch.path().join("out.parquet");
    let input = repo().join("fixtures/data/unbalanced-quote.csv");
    user_error(
        extract_command(&input, &output, &[]).output().unwrap(),
        &["unbalanced-quote.csv:7:", "the quote opened on line 6"],
    );
    // Nothing is left beside the output (on main an empty `.out.parquet.partial/` and a lock file).
    assert_eq!(files_in(scratch.path()), Vec::<String>::new());
}

/// The names in `dir`, hidden ones included, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn two_extracts_started_together_do_not_trip_over_each_other() {
    // On main the second could find the first's work folder before its job.json existed, discard it, and
    // the first then failed with "No such file or directory".
    let dir = tempfile::tempdir().unwrap();
    let input = corpus(dir.path(), 6_000);
    let args = ["--chunk-rows", "500", "--threads", "1"];
    let reference = dir.path().join("reference.parquet");
    ok(extract_command(&input, &reference, &args).output().unwrap());
    let output = dir.path().join("out.parquet");
    let children: Vec<_> = (0..3)
        .map(|_| {
            extract_command(&input, &output, &args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut succeeded = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            succeeded += 1;
        } else {
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(err.contains("another extract is writing"), "{err}");
        }
    }
    assert!(succeeded >= 1);
    assert_eq!(
        std::fs::read(&output).unwrap(),
        std::fs::read(&reference).unwrap()
    );
    // No work folder or lock file outlives the jobs.
    assert_eq!(
        files_in(dir.path()),
        [
            "corpus.csv",
            "out.parquet",
            "out.parquet.json",
            "reference.parquet",
            "reference.parquet.json"
        ]
    );
}

/// The Parquet footer says what made the file, as JSON a reader can parse (not a debug string).
#[test]
fn the_parquet_footer_records_the_settings_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.parquet");
    ok(
        extract_command(&repo().join("fixtures/data/tiny-sentiment.csv"), &out, &[])
            .output()
            .unwrap(),
    );
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[bytes.len() - 4..], b"PAR1");
    let footer_len =
        u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap()) as usize;
    let footer =
        String::from_utf8_lossy(&bytes[bytes.len() - 8 - footer_len..bytes.len() - 8]).into_owned();
    // The key-value pair is stored verbatim: find the identity's JSON object and parse it.
    let start = footer
        .find("{\"format\":")
        .expect("the graft.extract identity");
    let mut depth = 0;
    let end = footer[start..]
        .char_indices()
        .find_map(|(i, c)| {
            depth += match c {
                '{' => 1,
                '}' => -1,
                _ => 0,
            };
            (depth == 0).then_some(start + i + 1)
        })
        .unwrap();
    let identity: serde_json::Value = serde_json::from_str(&footer[start..end]).unwrap();
    let settings = &identity["settings"];
    assert_eq!(settings["pooling"], "mean", "{identity}");
    assert_eq!(settings["normalize"], true);
    assert!(settings["max_length"].is_u64());
    assert!(settings["prompt"].is_null());
    assert!(identity["onnx_sha256"].as_str().unwrap().len() == 64);
}

/// Off a terminal (here a pipe, as with a log file or a batch job) extraction writes plain progress lines
/// at the set interval: rows done of all, a whole-number rate and the time left; a pipeline run names each
/// step as it starts.
#[test]
fn progress_off_a_terminal_is_plain_lines_with_rate_and_time_left() {
    let dir = tempfile::tempdir().unwrap();
    let input = corpus(dir.path(), 40_000);
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .args([
            "extract",
            "--model",
            "fixtures/models/tiny-embedder.onnx",
            "--tokenizer",
        ])
        .args([
            "fixtures/models/tiny-tokenizer.json",
            "--text-column",
            "text",
            "--threads",
            "1",
            "--input",
        ])
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("x.npy"))
        .arg("--cache-dir")
        .arg(cache())
        .env("GRAFT_PROGRESS_SECONDS", "0.05")
        .output()
        .unwrap();
    let text = ok(output);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("extracting: "))
        .collect();
    assert!(!lines.is_empty(), "{text}");
    for line in &lines {
        // extracting: 4096 / 40000 rows · 2773 rows/s · 2 s left
        let fields: Vec<&str> = line
            .trim_start_matches("extracting: ")
            .split(" · ")
            .collect();
        let (done, all) = fields[0]
            .trim_end_matches(" rows")
            .split_once(" / ")
            .unwrap();
        assert!(
            done.parse::<u64>().unwrap() <= 40_000 && all == "40000",
            "{line}"
        );
        let rate = fields[1].trim_end_matches(" rows/s");
        let value = rate.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
        // Whole numbers from 10 up, one decimal below.
        assert_eq!(rate.contains('.'), value < 10.0, "{line}");
    }
    // Fine-tuning names itself and its epoch, and a rate below 10 keeps its decimal (it used to print
    // `extracting: 1 / 40 steps · 0 steps/s`). The tiny fixture trains in milliseconds, faster than a
    // progress line: the same pipeline with 400 epochs and no early stopping lasts long enough for lines.
    let fixture =
        std::fs::read_to_string(repo().join("fixtures/pipelines/tiny-fine-tune.toml")).unwrap();
    let fixtures = repo().join("fixtures");
    let longer = fixture
        .replace("\"../", &format!("\"{}/", fixtures.display()))
        .replace("epochs = 12", "epochs = 400")
        .replace("patience = 4", "");
    let pipeline = dir.path().join("tiny-fine-tune-longer.toml");
    std::fs::write(&pipeline, longer).unwrap();
    let tuned = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .arg("run")
        .arg(&pipeline)
        .args(["--runs-dir"])
        .arg(dir.path().join("runs"))
        .arg("--features-dir")
        .arg(dir.path().join("features"))
        .arg("--cache-dir")
        .arg(cache())
        .env("GRAFT_PROGRESS_SECONDS", "0.01")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&tuned.stderr);
    assert!(tuned.status.success(), "{stderr}");
    let steps: Vec<&str> = stderr.lines().filter(|l| l.contains(" steps · ")).collect();
    assert!(
        steps.iter().any(|l| l.starts_with("fine-tuning (epoch ")),
        "{stderr}"
    );
    for line in steps {
        assert!(line.starts_with("fine-tuning ("), "{line}");
        let rate = line.rsplit(" steps · ").next().unwrap();
        let rate = rate.split(" steps/s").next().unwrap();
        let value = rate.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
        assert_eq!(rate.contains('.'), value < 10.0, "{line}");
    }
    let run = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .args(["run", "fixtures/pipelines/tiny-curve.toml", "--runs-dir"])
        .arg(dir.path().join("runs"))
        .arg("--features-dir")
        .arg(dir.path().join("features"))
        .arg("--cache-dir")
        .arg(cache())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    for step in ["training 1 head(s)…", "scoring the heads", "learning curve"] {
        assert!(stderr.contains(step), "{step} in {stderr}");
    }
}

#[test]
fn a_job_killed_again_and_again_at_random_points_resumes_to_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let input = corpus(dir.path(), 20_000);
    let chunking = ["--id-column", "id", "--chunk-rows", "250", "--threads", "1"];
    let reference = dir.path().join("reference.parquet");
    ok(extract_command(&input, &reference, &chunking)
        .output()
        .unwrap());

    let output = dir.path().join("out.parquet");
    let work = dir.path().join(".out.parquet.partial");
    // Kill points from a fixed seed: after 0 to 7 more chunks each time, so some kills land while the job
    // is still setting up or checking what the last one kept, others mid-chunk.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut kills = 0;
    for round in 0..5 {
        let before = chunk_files(&work);
        let mut child = extract_command(&input, &output, &chunking)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let wait_for = before + (state % 8) as usize;
        let deadline = Instant::now() + Duration::from_secs(120);
        while chunk_files(&work) < wait_for && child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "round {round}: no chunks appeared"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        if child.try_wait().unwrap().is_some() {
            break; // finished before this kill point
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        assert!(
            !output.exists(),
            "round {round}: no output under the final name before the job completes"
        );
    }
    assert!(kills >= 3, "only {kills} kills landed");
    ok(extract_command(&input, &output, &chunking)
        .output()
        .unwrap());
    assert_eq!(
        std::fs::read(&output).unwrap(),
        std::fs::read(&reference).unwrap(),
        "resumed after {kills} kills, the file differs from an uninterrupted run's"
    );
    assert!(!work.exists(), "the work folder is removed once done");
}

#[test]
fn two_extracts_to_different_outputs_share_one_empty_cache() {
    // Both find the cache empty and fetch ONNX Runtime into it at the same time; both must finish with the
    // bytes of an extract on the filled cache, and the cache must hold one verified copy.
    let dir = tempfile::tempdir().unwrap();
    let input = corpus(dir.path(), 3_000);
    let args = ["--chunk-rows", "500", "--threads", "1"];
    let reference = dir.path().join("reference.parquet");
    ok(extract_command(&input, &reference, &args).output().unwrap());
    let shared = dir.path().join("shared-cache");
    let children: Vec<_> = ["a.parquet", "b.parquet"]
        .iter()
        .map(|name| {
            let mut command =
                extract_on(&shared, &TINY_MODEL, &input, &dir.path().join(name), &args);
            command
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            command.spawn().unwrap()
        })
        .collect();
    for child in children {
        ok(child.wait_with_output().unwrap());
    }
    for name in ["a.parquet", "b.parquet"] {
        assert_eq!(
            std::fs::read(dir.path().join(name)).unwrap(),
            std::fs::read(&reference).unwrap(),
            "{name}"
        );
    }
    let runtime = std::fs::read_dir(shared.join("runtime"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect::<Vec<_>>();
    assert_eq!(runtime.len(), 1, "{runtime:?}");
    let leftovers: Vec<String> = std::fs::read_dir(&runtime[0])
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "scratch left in the cache: {leftovers:?}"
    );
}

/// The defaults since issue 27 (2 sessions from 2 threads up, batches of at most 16 cut where lengths
/// change) are what the manifest records, and `--sessions` still overrides them.
#[test]
fn the_default_sessions_and_batches_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let input = corpus(dir.path(), 500);
    let manifest = |name: &str, extra: &[&str]| -> serde_json::Value {
        let output = dir.path().join(name);
        ok(extract_command(&input, &output, extra).output().unwrap());
        let text = std::fs::read(dir.path().join(format!("{name}.json"))).unwrap();
        serde_json::from_slice(&text).unwrap()
    };
    let defaults = manifest("defaults.npy", &["--threads", "2"]);
    let stats = &defaults["stats"];
    assert_eq!(stats["runtime"]["sessions"], 2, "{defaults}");
    assert_eq!(defaults["identity"]["batch_size"], 16, "{defaults}");
    let (batches, tokens, padded) = (
        stats["batches"].as_u64().unwrap(),
        stats["tokens"].as_u64().unwrap(),
        stats["padded_tokens"].as_u64().unwrap(),
    );
    // 500 rows of 1–40 words in one chunk: far more rows than lengths, so nearly every batch is of one
    // length; at most one batch per length is short.
    assert!(batches >= 500 / 16, "{stats}");
    assert!(padded - tokens < tokens / 50, "{stats}");
    let one = manifest("one.npy", &["--threads", "2", "--sessions", "1"]);
    assert_eq!(one["stats"]["runtime"]["sessions"], 1, "{one}");
    assert_eq!(
        std::fs::read(dir.path().join("one.npy")).unwrap(),
        std::fs::read(dir.path().join("defaults.npy")).unwrap()
    );
}
