//! The store URI: a `mongodb://` connection string that may carry a password, so it prints
//! as its host list only and every message built from it leaves the password out.

use std::fmt;

/// Database used when the URI names none.
pub const DEFAULT_DATABASE: &str = "followup";

/// Tells whether a `--store` value names a MongoDB server rather than a directory.
pub fn is_mongodb_uri(value: &str) -> bool {
    value.starts_with("mongodb://") || value.starts_with("mongodb+srv://")
}

/// A MongoDB connection string. `Debug` and `Display` show the scheme, hosts and database
/// only.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUri(String);

impl StoreUri {
    pub fn new(uri: impl Into<String>) -> StoreUri {
        StoreUri(uri.into())
    }

    pub(super) fn as_str(&self) -> &str {
        &self.0
    }

    /// The hosts and ports of the URI, without user name or password.
    pub fn address(&self) -> String {
        let rest = self.0.split_once("://").map_or(self.0.as_str(), |(_, rest)| rest);
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let hosts = authority.rsplit_once('@').map_or(authority, |(_, hosts)| hosts);
        hosts.to_owned()
    }

    /// The password of the URI, if it has one, as written (percent-encoded).
    fn password(&self) -> Option<&str> {
        let rest = self.0.split_once("://")?.1;
        let authority = rest.split(['/', '?']).next()?;
        let user_info = authority.rsplit_once('@')?.0;
        user_info.split_once(':').map(|(_, password)| password).filter(|p| !p.is_empty())
    }

    /// The message of a URI the driver refused, with the password cut out wherever the
    /// driver's text repeats it.
    pub(super) fn parse_error(&self, error: &dyn fmt::Display) -> String {
        let mut cause = error.to_string().replace('\n', " ");
        if let Some(password) = self.password() {
            cause = cause.replace(password, "****");
        }
        format!(
            "the store URI for {} is not a valid MongoDB connection string ({cause}); expected \
             mongodb://[user:password@]host:port/[database]",
            self.address()
        )
    }
}

impl fmt::Debug for StoreUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for StoreUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.0.split_once("://").map_or("mongodb", |(scheme, _)| scheme);
        write!(f, "{scheme}://{}/", self.address())
    }
}

#[cfg(test)]
mod tests {
    use super::StoreUri;

    #[test]
    fn address_and_display_leave_credentials_out() {
        let uri = StoreUri::new("mongodb://app:s3cret@db1:27017,db2:27018/followup?tls=true");
        assert_eq!(uri.address(), "db1:27017,db2:27018");
        assert_eq!(format!("{uri:?}"), "mongodb://db1:27017,db2:27018/");
    }

    #[test]
    fn parse_error_cuts_out_the_password() {
        let uri = StoreUri::new("mongodb://app:s3cret@db1:27017/");
        let message = uri.parse_error(&"bad option near app:s3cret");
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.contains("db1:27017"), "{message}");
    }
}
