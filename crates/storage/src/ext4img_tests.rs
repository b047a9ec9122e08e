//! Root tests of `ext4img.rs` against the real kernel (loop, ext4, fscrypt, mount API).

use super::*;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;

const MARK: &[u8] = b"BULKHEAD-PLAINTEXT-MARKER-7f3a";
const NAME: &str = "secret-file-name-visible";

fn key(b: u8) -> Secret<64> {
    Secret::from_slice(&[b; 64]).unwrap()
}

fn wait_detached(image: &Path) -> bool {
    for _ in 0..300 {
        if loopdev::find_backing(image).unwrap().is_none() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn format_open_write_and_the_disk_holds_only_ciphertext() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("vol.img");
    format_encrypted(&img, 32 << 20, 1024, 1234, 2345, &key(1)).unwrap();
    assert!(matches!(
        format_encrypted(&img, 32 << 20, 1024, 0, 0, &key(1)),
        Err(ImageError::Exists(_))
    ));
    assert!(wait_detached(&img), "format left a loop device");
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();

    let data = open_data(&img, &key(1), false).unwrap();
    let md = std::fs::metadata(format!("/proc/self/fd/{}", data.as_raw_fd())).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o777), (1234, 2345, 0o755));
    let f = openat(&data, NAME, libc::O_CREAT | libc::O_WRONLY, 0o600).unwrap();
    let mut f = std::fs::File::from(f);
    for _ in 0..256 {
        f.write_all(MARK).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .count(),
        mounts_before.lines().count(),
        "the volume showed up in the host's mount table"
    );
    // A control file outside `data` (unencrypted) shows that the raw search would find text.
    {
        let (_dev, mnt) = mount_image(&img, 0, false).unwrap();
        let c = openat(&mnt, "control", libc::O_CREAT | libc::O_WRONLY, 0o600).unwrap();
        let mut c = std::fs::File::from(c);
        c.write_all(b"BULKHEAD-CONTROL-MARKER").unwrap();
        c.sync_all().unwrap();
    }
    drop(data);
    assert!(
        wait_detached(&img),
        "the loop device outlived its last mount (autoclear)"
    );

    let raw = std::fs::read(&img).unwrap();
    assert!(
        contains(&raw, b"BULKHEAD-CONTROL-MARKER"),
        "control marker not found: search is broken"
    );
    assert!(!contains(&raw, MARK), "plaintext content on disk");
    assert!(
        !contains(&raw, NAME.as_bytes()),
        "plaintext file name on disk"
    );

    // Reopened with the right key: the file is there.
    let data = open_data(&img, &key(1), true).unwrap();
    let mut got = Vec::new();
    std::fs::File::from(openat(&data, NAME, libc::O_RDONLY, 0).unwrap())
        .read_to_end(&mut got)
        .unwrap();
    assert_eq!(got.len(), 256 * MARK.len());
    assert!(got.starts_with(MARK));
    // Read-only was asked: writes fail.
    assert_eq!(
        openat(&data, "new", libc::O_CREAT | libc::O_WRONLY, 0o600)
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );
    drop(data);
    assert!(wait_detached(&img));

    // A wrong key is refused, and without the key the kernel shows only ciphertext.
    assert!(matches!(
        open_data(&img, &key(2), false),
        Err(ImageError::WrongKey(_))
    ));
    let (_dev, mnt) = mount_image(&img, 0, false).unwrap();
    let names: Vec<String> = std::fs::read_dir(format!("/proc/self/fd/{}/data", mnt.as_raw_fd()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1);
    assert_ne!(names[0], NAME, "name readable without the key");
    let data = openat(&mnt, "data", libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
    let e = openat(&data, &names[0], libc::O_RDONLY, 0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOKEY), "{e}");
    drop((data, mnt, _dev));
    assert!(wait_detached(&img));
}

#[test]
fn two_opens_share_one_superblock() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("vol.img");
    format_encrypted(&img, 16 << 20, 256, 0, 0, &key(3)).unwrap();
    let a = open_data(&img, &key(3), false).unwrap();
    let b = open_data(&img, &key(3), false).unwrap();
    drop(openat(&a, "from-a", libc::O_CREAT | libc::O_WRONLY, 0o600).unwrap());
    // Seen at once through the other mount: same superblock, same page cache.
    assert!(openat(&b, "from-a", libc::O_RDONLY, 0).is_ok());
    let sa = std::fs::metadata(format!("/proc/self/fd/{}", a.as_raw_fd())).unwrap();
    let sb = std::fs::metadata(format!("/proc/self/fd/{}", b.as_raw_fd())).unwrap();
    assert_eq!(sa.dev(), sb.dev());
    drop(a);
    drop(b);
    assert!(wait_detached(&img));
}

#[test]
fn mkfs_failure_is_reported_and_leaves_no_image() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("tiny.img");
    let e = format_encrypted(&img, 4096, 16, 0, 0, &key(4)).unwrap_err();
    assert!(matches!(e, ImageError::Mkfs { .. }), "{e}");
    assert!(!img.exists());
}

fn sha256(path: &Path) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, &std::fs::read(path).unwrap())
        .as_ref()
        .to_vec()
}

/// A read-only open replays no journal and writes no superblock: the image's bytes are the
/// same after it; and a superblock shared in the other mode is refused.
#[test]
fn a_read_only_open_never_changes_the_image() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("vol.img");
    format_encrypted(&img, 16 << 20, 256, 0, 0, &key(4)).unwrap();
    {
        let data = open_data(&img, &key(4), false).unwrap();
        drop(openat(&data, "f", libc::O_CREAT | libc::O_WRONLY, 0o600).unwrap());
    }
    assert!(wait_detached(&img));
    let before = sha256(&img);
    let data = open_data(&img, &key(4), true).unwrap();
    let mut got = Vec::new();
    std::fs::File::from(openat(&data, "f", libc::O_RDONLY, 0).unwrap())
        .read_to_end(&mut got)
        .unwrap();
    assert!(matches!(
        open_data(&img, &key(4), false),
        Err(ImageError::SharedMode { .. })
    ));
    drop(data);
    assert!(wait_detached(&img));
    assert_eq!(sha256(&img), before, "a read-only open changed the image");
    let rw = open_data(&img, &key(4), false).unwrap();
    assert!(matches!(
        open_data(&img, &key(4), true),
        Err(ImageError::SharedMode { .. })
    ));
    drop(rw);
    assert!(wait_detached(&img));
}
