//! Listing a repository's tags (`/v2/<repository>/tags/list`), bounded: each page is read
//! through a size cap ([`bounds::MAX_TAG_PAGE_BYTES`]), at most [`bounds::MAX_TAG_PAGES`] pages
//! are followed, and a `Link` to the next page is followed only within the registry's origin
//! and the same path. The controller picks a semver range's newest tag from it.

use reqwest::Url;
use serde::Deserialize;

use crate::{ImageRef, PullError, Registry, bounds};

/// Tags asked for per page.
pub const PAGE_SIZE: usize = 1000;

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

impl Registry {
    /// The tags of `image`'s repository, in the registry's order. A repository with more
    /// pages than [`bounds::MAX_TAG_PAGES`] is refused as too large.
    pub async fn tags(&self, image: &ImageRef) -> Result<Vec<String>, PullError> {
        self.check_allowed(image)?;
        let first = format!("{}/tags/list?n={PAGE_SIZE}", Self::base(image));
        let mut url = Url::parse(&first).map_err(|e| PullError::InvalidManifest {
            reference: image.to_string(),
            message: format!("{first}: {e}"),
        })?;
        let mut out = Vec::new();
        for _ in 0..bounds::MAX_TAG_PAGES {
            let response = self
                .get(
                    image,
                    url.as_str(),
                    "application/json",
                    bounds::SMALL_REQUEST_TIMEOUT,
                )
                .await?;
            let link = response
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let what = format!("tag list of {}", image.repository);
            let bytes = self
                .read(image, &what, response, bounds::MAX_TAG_PAGE_BYTES)
                .await?;
            let page: Page =
                serde_json::from_slice(&bytes).map_err(|e| PullError::InvalidManifest {
                    reference: image.to_string(),
                    message: format!("{what}: {e}"),
                })?;
            out.extend(page.tags.unwrap_or_default());
            match next_page(&url, link.as_deref()) {
                Ok(Some(next)) => url = next,
                Ok(None) => return Ok(out),
                Err(location) => {
                    return Err(PullError::RedirectRefused {
                        registry: image.registry.clone(),
                        location,
                    });
                }
            }
        }
        Err(PullError::TooLarge {
            registry: image.registry.clone(),
            what: format!(
                "the tag list of {} (more than {} pages)",
                image.repository,
                bounds::MAX_TAG_PAGES
            ),
            limit: bounds::MAX_TAG_PAGES as u64 * bounds::MAX_TAG_PAGE_BYTES,
        })
    }
}

/// The next page a `Link: <...>; rel="next"` header names, if any; refused (the location)
/// when it leaves the registry's origin or the tag list's path.
pub fn next_page(current: &Url, link: Option<&str>) -> Result<Option<Url>, String> {
    let Some(link) = link else {
        return Ok(None);
    };
    let Some(target) = link
        .split(',')
        .find(|part| part.contains("rel=\"next\""))
        .and_then(|part| part.split_once('<'))
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(target, _)| target.trim())
    else {
        return Ok(None);
    };
    let next = bounds::redirect_target(current, target)?;
    if next.path() == current.path() {
        Ok(Some(next))
    } else {
        Err(next.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> Url {
        Url::parse("http://127.0.0.1:5000/v2/team/web/tags/list?n=1000").unwrap()
    }

    #[test]
    fn the_next_page_is_followed_within_the_tag_list() {
        let next = next_page(
            &url(),
            Some("</v2/team/web/tags/list?last=1.2.0&n=1000>; rel=\"next\""),
        )
        .unwrap()
        .unwrap();
        assert_eq!(next.query(), Some("last=1.2.0&n=1000"));
        assert_eq!(next_page(&url(), None).unwrap(), None);
        assert_eq!(next_page(&url(), Some("<x>; rel=\"prev\"")).unwrap(), None);
    }

    #[test]
    fn a_next_page_elsewhere_is_refused() {
        for link in [
            "<http://evil.example/v2/team/web/tags/list>; rel=\"next\"",
            "</v2/other/tags/list?last=a>; rel=\"next\"",
        ] {
            assert!(next_page(&url(), Some(link)).is_err(), "{link}");
        }
    }
}
