//! Which user and groups the container process runs as.
//!
//! Order of precedence (containerd's and CRI-O's):
//! 1. `run_as_user` (a uid): the gid is that uid's primary group in the image's
//!    `/etc/passwd`, or 0 when the uid has no entry there.
//! 2. `run_as_username`: must exist in the image's `/etc/passwd`.
//! 3. The image's `USER`: `""` (root), `name`, `uid`, `name:group`, `uid:gid`, `uid:group`,
//!    `name:gid`. Names must exist in the image; a numeric uid need not.
//!
//! `run_as_group` then replaces the primary gid (and needs 1 or 2).
//!
//! Additional gids: the primary gid, then (policy Merge, the default) every group of the
//! image's `/etc/group` that lists the user's name as a member, then the CRI
//! `supplemental_groups`; duplicates dropped, order kept. Policy Strict skips `/etc/group`.

use std::path::Path;

use k8s_cri::v1::{LinuxContainerSecurityContext, SupplementalGroupsPolicy};
use oci_spec::runtime::User;

use super::rootfs_file::read_rootfs_file;
use super::SpecError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

impl ResolvedUser {
    pub fn to_oci(&self) -> User {
        let mut user = User::default();
        user.set_uid(self.uid).set_gid(self.gid).set_additional_gids(Some(self.additional_gids.clone()));
        user
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Parses `/etc/passwd`; malformed lines and comments are skipped, as libc does.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry { name: f[0].to_string(), uid: f[2].trim().parse().ok()?, gid: f[3].trim().parse().ok()? })
        })
        .collect()
}

/// Parses `/etc/group`; malformed lines and comments are skipped.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 || f[0].is_empty() {
                return None;
            }
            let members = f
                .get(3)
                .map(|m| m.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
                .unwrap_or_default();
            Some(GroupEntry { name: f[0].to_string(), gid: f[2].trim().parse().ok()?, members })
        })
        .collect()
}

/// The image's user database, read lazily from its rootfs.
struct ImageUsers<'a> {
    rootfs: &'a Path,
    passwd: Option<Vec<PasswdEntry>>,
    group: Option<Vec<GroupEntry>>,
}

impl<'a> ImageUsers<'a> {
    fn new(rootfs: &'a Path) -> Self {
        ImageUsers { rootfs, passwd: None, group: None }
    }

    fn passwd(&mut self) -> Result<&[PasswdEntry], SpecError> {
        if self.passwd.is_none() {
            let text = read_rootfs_file(self.rootfs, "etc/passwd")?.unwrap_or_default();
            self.passwd = Some(parse_passwd(&text));
        }
        Ok(self.passwd.as_deref().unwrap_or_default())
    }

    fn group(&mut self) -> Result<&[GroupEntry], SpecError> {
        if self.group.is_none() {
            let text = read_rootfs_file(self.rootfs, "etc/group")?.unwrap_or_default();
            self.group = Some(parse_group(&text));
        }
        Ok(self.group.as_deref().unwrap_or_default())
    }

    fn user_by_uid(&mut self, uid: u32) -> Result<Option<PasswdEntry>, SpecError> {
        Ok(self.passwd()?.iter().find(|e| e.uid == uid).cloned())
    }

    fn user_by_name(&mut self, name: &str) -> Result<PasswdEntry, SpecError> {
        let found = self.passwd()?.iter().find(|e| e.name == name).cloned();
        found.ok_or_else(|| SpecError::UserNotFound { user: name.to_string(), detail: String::new() })
    }

    fn group_by_name(&mut self, name: &str) -> Result<u32, SpecError> {
        let found = self.group()?.iter().find(|g| g.name == name).map(|g| g.gid);
        found.ok_or_else(|| SpecError::GroupNotFound { group: name.to_string(), detail: String::new() })
    }
}

fn id_from_cri(what: &str, value: i64) -> Result<u32, SpecError> {
    // u32::MAX is (uid_t)-1, which means "unchanged" to the kernel: never a real id.
    u32::try_from(value)
        .ok()
        .filter(|v| *v != u32::MAX)
        .ok_or_else(|| SpecError::invalid(format!("{what} {value} is not a valid id (0..{})", u32::MAX - 1)))
}

fn numeric_id(s: &str) -> Option<Result<u32, SpecError>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        s.parse::<u32>()
            .ok()
            .filter(|v| *v != u32::MAX)
            .ok_or_else(|| SpecError::invalid(format!("id {s:?} is out of range"))),
    )
}

/// Resolves the process user; see the module docs.
pub fn resolve_user(
    rootfs: &Path,
    sc: &LinuxContainerSecurityContext,
    image_user: Option<&str>,
) -> Result<ResolvedUser, SpecError> {
    let mut db = ImageUsers::new(rootfs);
    // (uid, gid, the user's name for group membership)
    let (uid, mut gid, name) = if let Some(run_as_user) = &sc.run_as_user {
        let uid = id_from_cri("run_as_user", run_as_user.value)?;
        match db.user_by_uid(uid)? {
            Some(e) => (uid, e.gid, Some(e.name)),
            None => (uid, 0, None),
        }
    } else if !sc.run_as_username.is_empty() {
        let e = db.user_by_name(&sc.run_as_username).map_err(|e| with_detail(e, " (run_as_username)"))?;
        (e.uid, e.gid, Some(e.name))
    } else if let Some(group) = &sc.run_as_group {
        return Err(SpecError::invalid(format!(
            "run_as_group {} is set without run_as_user or run_as_username",
            group.value
        )));
    } else {
        resolve_user_string(&mut db, image_user.unwrap_or("").trim())
            .map_err(|e| with_detail(e, &format!(" (image USER {:?})", image_user.unwrap_or(""))))?
    };
    if let Some(group) = &sc.run_as_group {
        gid = id_from_cri("run_as_group", group.value)?;
    }

    let mut additional = vec![gid];
    let strict = sc.supplemental_groups_policy == SupplementalGroupsPolicy::Strict as i32;
    if let (false, Some(name)) = (strict, &name) {
        for g in db.group()? {
            if g.members.iter().any(|m| m == name) && !additional.contains(&g.gid) {
                additional.push(g.gid);
            }
        }
    }
    for g in &sc.supplemental_groups {
        let g = id_from_cri("supplemental group", *g)?;
        if !additional.contains(&g) {
            additional.push(g);
        }
    }
    Ok(ResolvedUser { uid, gid, additional_gids: additional })
}

fn with_detail(err: SpecError, detail: &str) -> SpecError {
    match err {
        SpecError::UserNotFound { user, .. } => SpecError::UserNotFound { user, detail: detail.to_string() },
        SpecError::GroupNotFound { group, .. } => SpecError::GroupNotFound { group, detail: detail.to_string() },
        other => other,
    }
}

/// Docker's `USER` syntax: `user[:group]`, each a name or a number.
fn resolve_user_string(db: &mut ImageUsers<'_>, user: &str) -> Result<(u32, u32, Option<String>), SpecError> {
    if user.is_empty() {
        // Root. Its name (for group membership) is whatever uid 0 is called in the image.
        let name = db.user_by_uid(0)?.map(|e| e.name);
        return Ok((0, 0, name));
    }
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, primary_gid, name) = match numeric_id(user_part) {
        Some(uid) => {
            let uid = uid?;
            match db.user_by_uid(uid)? {
                Some(e) => (uid, e.gid, Some(e.name)),
                None => (uid, 0, None),
            }
        }
        None if user_part.is_empty() => {
            return Err(SpecError::invalid(format!("image USER {user:?} has an empty user part")));
        }
        None => {
            let e = db.user_by_name(user_part)?;
            (e.uid, e.gid, Some(e.name))
        }
    };
    let gid = match group_part {
        None => primary_gid,
        Some("") => return Err(SpecError::invalid(format!("image USER {user:?} has an empty group part"))),
        Some(g) => match numeric_id(g) {
            Some(gid) => gid?,
            None => db.group_by_name(g)?,
        },
    };
    Ok((uid, gid, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::Int64Value;
    use std::os::unix::fs::symlink;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1001::/home/app:/bin/sh
broken line
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
";
    const GROUP: &str = "\
root:x:0:
daemon:x:1:
wheel:x:10:root,app
appgrp:x:1001:
audio:x:29:app , other
video:x:44:other
bad:x:notanumber:app
";

    fn rootfs(passwd: Option<&str>, group: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        if let Some(p) = passwd {
            std::fs::write(dir.path().join("etc/passwd"), p).unwrap();
        }
        if let Some(g) = group {
            std::fs::write(dir.path().join("etc/group"), g).unwrap();
        }
        dir
    }

    fn sc() -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext::default()
    }

    #[test]
    fn parses_passwd_and_group() {
        let p = parse_passwd(PASSWD);
        assert_eq!(p.len(), 4);
        assert_eq!(p[2], PasswdEntry { name: "app".into(), uid: 1000, gid: 1001 });
        let g = parse_group(GROUP);
        assert_eq!(g.len(), 6);
        assert_eq!(g[2].members, vec!["root", "app"]);
        assert_eq!(g[4].members, vec!["app", "other"]);
    }

    #[test]
    fn image_user_strings() {
        let dir = rootfs(Some(PASSWD), Some(GROUP));
        // image USER -> (uid, gid, additional) or the error's gRPC code
        type Case<'a> = (&'a str, Result<(u32, u32, &'a [u32]), tonic::Code>);
        let cases: &[Case] = &[
            ("", Ok((0, 0, &[0, 10]))),
            ("root", Ok((0, 0, &[0, 10]))),
            ("app", Ok((1000, 1001, &[1001, 10, 29]))),
            ("1000", Ok((1000, 1001, &[1001, 10, 29]))),
            ("4242", Ok((4242, 0, &[0]))),
            ("app:wheel", Ok((1000, 10, &[10, 29]))),
            ("app:5", Ok((1000, 5, &[5, 10, 29]))),
            ("4242:4343", Ok((4242, 4343, &[4343]))),
            ("4242:video", Ok((4242, 44, &[44]))),
            ("nobody", Ok((65534, 65534, &[65534]))),
            ("ghost", Err(tonic::Code::NotFound)),
            ("app:ghosts", Err(tonic::Code::NotFound)),
            ("1000:", Err(tonic::Code::InvalidArgument)),
            (":10", Err(tonic::Code::InvalidArgument)),
            ("99999999999", Err(tonic::Code::InvalidArgument)),
            ("4294967295", Err(tonic::Code::InvalidArgument)),
        ];
        for (user, want) in cases {
            let got = resolve_user(dir.path(), &sc(), Some(user));
            match want {
                Ok((uid, gid, extra)) => {
                    let got = got.unwrap_or_else(|e| panic!("{user:?}: {e}"));
                    assert_eq!((got.uid, got.gid, got.additional_gids.as_slice()), (*uid, *gid, *extra), "{user:?}");
                }
                Err(code) => {
                    let err = got.unwrap_err();
                    assert_eq!(err.code(), *code, "{user:?}: {err}");
                }
            }
        }
        let err = resolve_user(dir.path(), &sc(), Some("ghost")).unwrap_err();
        assert!(err.to_string().contains("\"ghost\"") && err.to_string().contains("image USER"), "{err}");
    }

    #[test]
    fn cri_run_as_fields_win_over_the_image() {
        let dir = rootfs(Some(PASSWD), Some(GROUP));
        let mut s = sc();
        s.run_as_user = Some(Int64Value { value: 1000 });
        let u = resolve_user(dir.path(), &s, Some("root")).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (1000, 1001, vec![1001, 10, 29]));

        s.run_as_group = Some(Int64Value { value: 3000 });
        s.supplemental_groups = vec![4000, 10, 3000];
        let u = resolve_user(dir.path(), &s, None).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (1000, 3000, vec![3000, 10, 29, 4000]));

        // Strict policy: no groups from the image.
        s.supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
        let u = resolve_user(dir.path(), &s, None).unwrap();
        assert_eq!(u.additional_gids, vec![3000, 4000, 10]);

        // A uid unknown to the image: gid 0.
        let mut s = sc();
        s.run_as_user = Some(Int64Value { value: 5555 });
        let u = resolve_user(dir.path(), &s, Some("app")).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (5555, 0, vec![0]));

        let mut s = sc();
        s.run_as_username = "daemon".into();
        let u = resolve_user(dir.path(), &s, Some("app")).unwrap();
        assert_eq!((u.uid, u.gid), (1, 1));

        s.run_as_username = "ghost".into();
        let err = resolve_user(dir.path(), &s, None).unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert!(err.to_string().contains("run_as_username"), "{err}");

        let mut s = sc();
        s.run_as_group = Some(Int64Value { value: 5 });
        assert_eq!(resolve_user(dir.path(), &s, Some("app")).unwrap_err().code(), tonic::Code::InvalidArgument);

        for bad in [-1, 1 << 32, u32::MAX as i64] {
            let mut s = sc();
            s.run_as_user = Some(Int64Value { value: bad });
            assert_eq!(resolve_user(dir.path(), &s, None).unwrap_err().code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn image_without_user_database() {
        let dir = rootfs(None, None);
        let u = resolve_user(dir.path(), &sc(), None).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (0, 0, vec![0]));
        let u = resolve_user(dir.path(), &sc(), Some("123:456")).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (123, 456, vec![456]));
        assert_eq!(resolve_user(dir.path(), &sc(), Some("app")).unwrap_err().code(), tonic::Code::NotFound);
    }

    #[test]
    fn hostile_symlinks_are_not_followed_out_of_the_rootfs() {
        // A "host" passwd with a user that only the host knows.
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("shadow"), "hostonly:x:777:777::/:/bin/sh\n").unwrap();
        std::fs::write(host.path().join("group"), "hostgrp:x:888:app\n").unwrap();

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        symlink(host.path().join("shadow"), dir.path().join("etc/passwd")).unwrap();
        let depth = dir.path().components().count() + 3;
        symlink(
            format!("{}{}", "../".repeat(depth), host.path().join("group").display().to_string().trim_start_matches('/')),
            dir.path().join("etc/group"),
        )
        .unwrap();

        let err = resolve_user(dir.path(), &sc(), Some("hostonly")).unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
        let err = resolve_user(dir.path(), &sc(), Some("0:hostgrp")).unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
        let u = resolve_user(dir.path(), &sc(), Some("777")).unwrap();
        assert_eq!(u.gid, 0, "uid 777 must not be found through the host's file");

        // /etc itself a symlink to the host's directory.
        let dir2 = tempfile::tempdir().unwrap();
        symlink(host.path(), dir2.path().join("etc")).unwrap();
        std::fs::copy(host.path().join("shadow"), host.path().join("passwd")).unwrap();
        assert_eq!(resolve_user(dir2.path(), &sc(), Some("hostonly")).unwrap_err().code(), tonic::Code::NotFound);
    }
}
