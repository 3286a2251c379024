//! What a search event records about the client, and only that: a keyed hash of its address
//! (HMAC-SHA256 under `SEARCH_IP_HASH_KEY`; the address itself is never stored or logged)
//! and the class of its user agent.
use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{header, request::Parts},
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What the request says about its client: the peer address (the API is reached directly;
/// a proxy in front would need its forwarding header trusted here) and the user agent.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Client {
            ip: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        })
    }
}

/// Hashes client addresses under the configured key.
#[derive(Clone)]
pub struct IpHasher {
    key: Hmac<Sha256>,
}

impl std::fmt::Debug for IpHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IpHasher(<hidden>)")
    }
}

impl IpHasher {
    pub fn new(key: &str) -> Self {
        Self {
            // HMAC takes a key of any length; this cannot fail
            key: Hmac::<Sha256>::new_from_slice(key.as_bytes())
                .unwrap_or_else(|_| unreachable!("HMAC accepts any key length")),
        }
    }

    /// The 32-byte keyed hash of `ip`. An IPv4 address seen as IPv4-mapped IPv6 hashes as
    /// the IPv4 address it is, so one client has one hash whichever socket it came in on.
    pub fn hash(&self, ip: IpAddr) -> Vec<u8> {
        let mut mac = self.key.clone();
        match ip.to_canonical() {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        mac.finalize().into_bytes().to_vec()
    }
}

/// The kind of client a search came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UaClass {
    Desktop,
    Mobile,
    Tablet,
    Bot,
}

/// Distinct user agents whose class is kept.
const UA_CACHE_ENTRIES: usize = 4096;
/// The longest user agent whose class is kept, in bytes.
const UA_CACHE_MAX_LEN: usize = 512;

impl UaClass {
    pub fn as_str(self) -> &'static str {
        match self {
            UaClass::Desktop => "desktop",
            UaClass::Mobile => "mobile",
            UaClass::Tablet => "tablet",
            UaClass::Bot => "bot",
        }
    }

    /// Classifies a `User-Agent` with woothee (a maintained parser with its own dataset of
    /// browsers, operating systems and crawlers). woothee has no tablet class: an iPad, and
    /// an Android device whose agent lacks the "Mobile" token (Google's rule for telling
    /// Android tablets from phones), are tablets. Crawlers and HTTP libraries / feed readers
    /// (woothee's "misc") are bots, as is a request with no user agent at all; consoles and
    /// TVs ("appliance") and agents woothee does not know count as desktop, so that an
    /// unusual browser is not dropped from every rate.
    pub fn of(user_agent: Option<&str>) -> UaClass {
        let Some(agent) = user_agent.map(str::trim).filter(|a| !a.is_empty()) else {
            return UaClass::Bot;
        };
        // Traffic carries few distinct agents, and woothee's patterns cost about 4% of the
        // api's CPU per search event (perf, ops/bench/search): each agent is classified once
        // and kept, within a bound, with the longest agents never kept.
        static CLASSES: std::sync::LazyLock<quick_cache::sync::Cache<String, UaClass>> =
            std::sync::LazyLock::new(|| quick_cache::sync::Cache::new(UA_CACHE_ENTRIES));
        if let Some(class) = CLASSES.get(agent) {
            return class;
        }
        let class = Self::classify(agent);
        if agent.len() <= UA_CACHE_MAX_LEN {
            CLASSES.insert(agent.to_string(), class);
        }
        class
    }

    fn classify(agent: &str) -> UaClass {
        let Some(parsed) = woothee::parser::Parser::new().parse(agent) else {
            return UaClass::Desktop;
        };
        match parsed.category {
            "crawler" | "misc" => UaClass::Bot,
            "smartphone" | "mobilephone" => {
                let tablet =
                    parsed.os == "iPad" || (parsed.os == "Android" && !agent.contains("Mobile"));
                if tablet {
                    UaClass::Tablet
                } else {
                    UaClass::Mobile
                }
            }
            _ => UaClass::Desktop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_fall_in_four_classes() {
        let cases = [
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                UaClass::Desktop,
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
                UaClass::Desktop,
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
                UaClass::Mobile,
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
                UaClass::Mobile,
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
                UaClass::Tablet,
            ),
            (
                "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                UaClass::Tablet,
            ),
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                UaClass::Bot,
            ),
            (
                "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
                UaClass::Bot,
            ),
            ("curl/8.4.0", UaClass::Bot),
            ("", UaClass::Bot),
        ];
        // twice: the second answer comes from the kept classes
        for (agent, class) in cases.iter().chain(cases.iter()) {
            assert_eq!(UaClass::of(Some(agent)), *class, "{agent}");
        }
        let long = format!("Googlebot/2.1 {}", "x".repeat(UA_CACHE_MAX_LEN));
        assert_eq!(
            UaClass::of(Some(&long)),
            UaClass::Bot,
            "an agent too long to keep"
        );
        assert_eq!(UaClass::of(None), UaClass::Bot);
    }

    #[test]
    fn the_hash_is_keyed_and_canonical() {
        let a = IpHasher::new("key-one-key-one-key-one-key-one-");
        let b = IpHasher::new("key-two-key-two-key-two-key-two-");
        let v4: IpAddr = "127.0.0.1".parse().expect("ip");
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        assert_eq!(a.hash(v4), a.hash(mapped));
        assert_ne!(a.hash(v4), b.hash(v4));
        assert_eq!(a.hash(v4).len(), 32);
        assert!(format!("{a:?}").contains("hidden"));
    }
}
