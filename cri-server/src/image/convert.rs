//! Image records to CRI protobuf messages.

use std::collections::HashMap;

use berth_images::Image;
use k8s_cri::v1::{self as cri, Int64Value};

/// Who an image runs as, in the two shapes CRI's `Image` carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageUser {
    /// Set when the user part of `USER` is a numeric uid.
    pub uid: Option<i64>,
    /// Set when the user part of `USER` is a name (kubelet refuses runAsNonRoot for names
    /// it cannot check, so the distinction matters).
    pub username: String,
}

/// Splits an image config's `USER` (`uid`, `uid:gid`, `name`, `name:group`) as containerd
/// does: only the part before `:` counts; a number is a uid, anything else a user name.
/// Uids are Linux `uid_t`, so only values that fit in u32 are numeric.
pub fn parse_image_user(user: Option<&str>) -> ImageUser {
    let user_part = user.unwrap_or("").split(':').next().unwrap_or("");
    if user_part.is_empty() {
        return ImageUser::default();
    }
    match user_part.parse::<u32>() {
        Ok(uid) => ImageUser { uid: Some(i64::from(uid)), username: String::new() },
        Err(_) => ImageUser { uid: None, username: user_part.to_string() },
    }
}

/// The CRI view of an image. `user_specified` is the reference the caller asked with
/// (empty when listing), echoed in `spec.user_specified_image`.
pub fn to_cri_image(image: &Image, user_specified: &str) -> cri::Image {
    let user = parse_image_user(image.config.user.as_deref());
    cri::Image {
        id: image.id.clone(),
        repo_tags: image.repo_tags.clone(),
        repo_digests: image.repo_digests.clone(),
        size: image.size,
        uid: user.uid.map(|value| Int64Value { value }),
        username: user.username,
        spec: Some(cri::ImageSpec {
            // As containerd: the spec names the image by id, which is stable across re-tags.
            image: image.id.clone(),
            user_specified_image: user_specified.to_string(),
            ..Default::default()
        }),
        pinned: image.pinned,
    }
}

/// Verbose ImageStatus info: one key `info` holding JSON, as containerd answers, with the
/// OCI image config as pulled (`imageSpec`), berth's parsed config, the manifest digest
/// and the chain ids of the snapshots.
pub fn verbose_info(image: &Image) -> HashMap<String, String> {
    // The stored config JSON was verified when pulled; should it ever fail to parse, show
    // it as a string rather than hide it.
    let image_spec = serde_json::from_str::<serde_json::Value>(&image.config_json)
        .unwrap_or_else(|_| serde_json::Value::String(image.config_json.clone()));
    let info = serde_json::json!({
        "id": image.id,
        "manifestDigest": image.manifest_digest,
        "chainIDs": image.chain_ids,
        "pulledAtUnixNano": image.pulled_at_ns,
        "config": image.config,
        "imageSpec": image_spec,
    });
    HashMap::from([("info".to_string(), info.to_string())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::fake;

    #[test]
    fn numeric_user_is_a_uid() {
        assert_eq!(parse_image_user(Some("1000")), ImageUser { uid: Some(1000), username: String::new() });
        assert_eq!(parse_image_user(Some("0")), ImageUser { uid: Some(0), username: String::new() });
        assert_eq!(parse_image_user(Some("1000:1000")), ImageUser { uid: Some(1000), username: String::new() });
        assert_eq!(parse_image_user(Some("65534:nogroup")), ImageUser { uid: Some(65534), username: String::new() });
    }

    #[test]
    fn named_user_is_a_username() {
        assert_eq!(parse_image_user(Some("nobody")), ImageUser { uid: None, username: "nobody".into() });
        assert_eq!(parse_image_user(Some("www-data:www-data")), ImageUser { uid: None, username: "www-data".into() });
        assert_eq!(parse_image_user(Some("-1")), ImageUser { uid: None, username: "-1".into() }, "not a uid_t");
        assert_eq!(parse_image_user(Some("4294967296")), ImageUser { uid: None, username: "4294967296".into() }, "beyond uid_t");
    }

    #[test]
    fn no_user_is_neither() {
        assert_eq!(parse_image_user(None), ImageUser::default());
        assert_eq!(parse_image_user(Some("")), ImageUser::default());
        assert_eq!(parse_image_user(Some(":100")), ImageUser::default());
    }

    #[test]
    fn cri_image_carries_the_record() {
        let record = fake::image(&"a".repeat(64), "docker.io/library/busybox:latest", Some("1000:1000"));
        let image = to_cri_image(&record, "busybox");
        assert_eq!(image.id, record.id);
        assert_eq!(image.repo_tags, record.repo_tags);
        assert_eq!(image.repo_digests, record.repo_digests);
        assert_eq!(image.size, 1234);
        assert_eq!(image.uid, Some(Int64Value { value: 1000 }));
        assert_eq!(image.username, "");
        let spec = image.spec.expect("spec is set");
        assert_eq!(spec.image, record.id);
        assert_eq!(spec.user_specified_image, "busybox");
        assert!(!image.pinned);

        let named = to_cri_image(&fake::image(&"b".repeat(64), "x:1", Some("nobody")), "");
        assert_eq!(named.uid, None);
        assert_eq!(named.username, "nobody");
    }

    #[test]
    fn verbose_info_is_json_with_the_image_config() {
        let record = fake::image(&"a".repeat(64), "docker.io/library/busybox:latest", None);
        let info = verbose_info(&record);
        let json: serde_json::Value = serde_json::from_str(&info["info"]).expect("info is JSON");
        assert_eq!(json["id"], record.id.as_str());
        assert_eq!(json["manifestDigest"], record.manifest_digest.as_str());
        assert_eq!(json["chainIDs"][0], record.chain_ids[0].as_str());
        assert_eq!(json["imageSpec"]["config"]["Cmd"][0], "sh");
        assert_eq!(json["config"]["os"], "linux");
    }
}
