//! Which container a process runs in, from its cgroup path.
//!
//! Runtimes name a container's cgroup after its 64-hex-digit id: `/docker/<id>`,
//! `/system.slice/docker-<id>.scope`, `/kubepods/…/cri-containerd-<id>.scope`, `crio-<id>`,
//! `libpod-<id>`. The last such id in the path is the innermost container.

/// The container id of `pid`, if its cgroup says it has one.
pub fn container_id(pid: u32) -> Option<String> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    cgroups.lines().find_map(|line| {
        // "hierarchy-id:controllers:path"; cgroup v2 has a single "0::/path" line.
        let path = line.splitn(3, ':').nth(2)?;
        id_in_path(path)
    })
}

fn id_in_path(path: &str) -> Option<String> {
    path.split('/').rev().find_map(|segment| {
        let name = segment.strip_suffix(".scope").unwrap_or(segment);
        let id = name.rsplit(['-', ':']).next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| id.to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_runtime_ids_in_cgroup_paths() {
        let id = "4f1d9a7e".repeat(8);
        for path in [
            format!("/docker/{id}"),
            format!("/system.slice/docker-{id}.scope"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{id}.scope"
            ),
            format!("/machine.slice/libpod-{id}.scope/container"),
            format!("/kubepods/besteffort/pod12/{id}"),
        ] {
            assert_eq!(id_in_path(&path), Some(id.clone()), "{path}");
        }
        assert_eq!(id_in_path("/user.slice/user-0.slice/session-3.scope"), None);
        assert_eq!(id_in_path("/"), None);
    }
}
