//! Every file the observer writes holds other people's prompts and answers (spans, recordings,
//! the store) or what it learnt about their programs (the analysis cache): each is created
//! `0600`, each directory it creates `0700`, whatever the umask.
//!
//! A regular file that exists already is made private too: wider permissions are tightened to
//! `0600` with a warning saying so. One owned by another user is refused, since its owner could
//! widen them again and read everything written. Other kinds of files (a terminal, a pipe,
//! `/dev/null`) are written as they are: they are not ours to change.
use std::{
    fs::{DirBuilder, File, OpenOptions, Permissions},
    io,
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

/// Permissions of every file the observer creates.
pub const FILE_MODE: u32 = 0o600;
/// Permissions of every directory the observer creates.
pub const DIRECTORY_MODE: u32 = 0o700;

/// Creates `path` (or empties it) for writing, private.
pub fn create(path: &Path) -> io::Result<File> {
    open(
        path,
        OpenOptions::new().write(true).create(true).truncate(true),
    )
}

/// Opens `path` for appending, creating it if needed, private.
pub fn append(path: &Path) -> io::Result<File> {
    open(path, OpenOptions::new().append(true).create(true))
}

/// Creates `path` if needed without changing what it holds (a database that another library
/// opens by name), private.
pub fn create_keeping(path: &Path) -> io::Result<()> {
    open(path, OpenOptions::new().read(true).write(true).create(true)).map(drop)
}

/// Makes `path` private if it exists (files created by a library, such as SQLite's WAL).
pub fn tighten_if_present(path: &Path) -> io::Result<()> {
    match File::open(path) {
        Ok(file) => make_private(&file, path, FILE_MODE),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// Creates `dir` and its missing parents `0700`. Directories that exist are left as they are
/// (`/var/lib`, a home directory), but for `dir` itself when `own` says the observer names it:
/// that one is made private like a file.
pub fn create_dir_all(dir: &Path, own: bool) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIRECTORY_MODE)
        .create(dir)?;
    if own {
        make_private(&File::open(dir)?, dir, DIRECTORY_MODE)?;
    }
    Ok(())
}

fn open(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    // A new file gets these bits, less the umask's; an existing one is checked below.
    let file = options.mode(FILE_MODE).open(path)?;
    make_private(&file, path, FILE_MODE)?;
    Ok(file)
}

/// Tightens an open regular file or directory to `mode` if others could read it, and refuses
/// one that belongs to someone else.
fn make_private(file: &File, path: &Path, mode: u32) -> io::Result<()> {
    let metadata = file.metadata()?;
    if !metadata.is_file() && !metadata.is_dir() {
        return Ok(());
    }
    // SAFETY: geteuid cannot fail and touches no memory.
    let us = unsafe { libc::geteuid() };
    if metadata.uid() != us {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to user id {}, not to us (user id {us}): its owner could read \
                 everything written there; remove it, or choose another path",
                path.display(),
                metadata.uid()
            ),
        ));
    }
    let current = metadata.mode() & 0o7777;
    if current & !mode != 0 {
        file.set_permissions(Permissions::from_mode(current & mode))?;
        log::warn!(
            "{} was open to other users (mode {current:04o}); made it private ({:04o})",
            path.display(),
            current & mode
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{fs, io::Write};

    use super::*;

    fn mode_of(path: &Path) -> io::Result<u32> {
        Ok(fs::metadata(path)?.mode() & 0o7777)
    }

    /// Runs `f` with the umask most systems use, which leaves new files readable by everyone.
    fn with_open_umask<T>(f: impl FnOnce() -> T) -> T {
        // SAFETY: umask only swaps the process's mask (tests in this module restore it).
        let previous = unsafe { libc::umask(0o022) };
        let result = f();
        unsafe { libc::umask(previous) };
        result
    }

    #[test]
    fn new_files_and_directories_are_private_whatever_the_umask() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("a/b");
        let (created, appended, kept) = (dir.join("c"), dir.join("d"), dir.join("e"));
        with_open_umask(|| {
            create_dir_all(&dir, true).expect("dirs");
            create(&created).expect("create");
            append(&appended).expect("append");
            create_keeping(&kept).expect("create keeping");
        });
        assert_eq!(mode_of(&root.path().join("a")).unwrap(), DIRECTORY_MODE);
        assert_eq!(mode_of(&dir).unwrap(), DIRECTORY_MODE);
        for file in [&created, &appended, &kept] {
            assert_eq!(mode_of(file).unwrap(), FILE_MODE, "{}", file.display());
        }
    }

    #[test]
    fn existing_files_are_tightened_and_keep_or_lose_their_content_as_asked() {
        let root = tempfile::tempdir().expect("tempdir");
        let open_file = |name: &str| {
            let path = root.path().join(name);
            fs::write(&path, b"before\n").unwrap();
            fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
            path
        };
        let appended = open_file("appended");
        append(&appended).unwrap().write_all(b"after\n").unwrap();
        assert_eq!(fs::read(&appended).unwrap(), b"before\nafter\n");
        assert_eq!(mode_of(&appended).unwrap(), FILE_MODE);

        let created = open_file("created");
        create(&created).unwrap();
        assert_eq!(fs::read(&created).unwrap(), b"");
        assert_eq!(mode_of(&created).unwrap(), FILE_MODE);

        let kept = open_file("kept");
        create_keeping(&kept).unwrap();
        assert_eq!(fs::read(&kept).unwrap(), b"before\n");
        assert_eq!(mode_of(&kept).unwrap(), FILE_MODE);

        let wal = open_file("db-wal");
        tighten_if_present(&wal).unwrap();
        assert_eq!(mode_of(&wal).unwrap(), FILE_MODE);
        tighten_if_present(&root.path().join("absent")).expect("nothing to do");

        // Narrower permissions stay narrower.
        let read_only = open_file("read-only");
        fs::set_permissions(&read_only, Permissions::from_mode(0o400)).unwrap();
        tighten_if_present(&read_only).unwrap();
        assert_eq!(mode_of(&read_only).unwrap(), 0o400);
    }

    #[test]
    fn an_existing_directory_is_tightened_only_when_it_is_ours() {
        let root = tempfile::tempdir().expect("tempdir");
        let shared = root.path().join("shared");
        let ours = shared.join("ours");
        for dir in [&shared, &ours] {
            fs::create_dir(dir).unwrap();
            fs::set_permissions(dir, Permissions::from_mode(0o755)).unwrap();
        }
        create_dir_all(&ours, true).unwrap();
        assert_eq!(mode_of(&ours).unwrap(), DIRECTORY_MODE);
        assert_eq!(
            mode_of(&shared).unwrap(),
            0o755,
            "a parent is not ours to change"
        );
        create_dir_all(&shared, false).unwrap();
        assert_eq!(mode_of(&shared).unwrap(), 0o755);
    }

    #[test]
    fn special_files_are_written_as_they_are() {
        // Were it taken for a file, root would make /dev/null private, and anyone else
        // would be refused it.
        let null = Path::new("/dev/null");
        let before = mode_of(null).unwrap();
        append(null).expect("/dev/null opens");
        create(null).expect("/dev/null opens");
        assert_eq!(mode_of(null).unwrap(), before);
    }

    #[test]
    fn a_file_owned_by_someone_else_is_refused() {
        // /etc/passwd belongs to root; run as root, a file chowned to nobody stands in.
        let root = tempfile::tempdir().expect("tempdir");
        let foreign = if unsafe { libc::geteuid() } == 0 {
            let path = root.path().join("foreign");
            fs::write(&path, b"").unwrap();
            std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
            path
        } else {
            Path::new("/etc/passwd").to_path_buf()
        };
        let error = tighten_if_present(&foreign).expect_err("refused");
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
        assert!(error.to_string().contains("remove it"), "{error}");
    }
}
