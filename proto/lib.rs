//! Agora's gRPC contracts: the code generated from `agora/**/*.proto` for clients and
//! servers, the encoded file descriptor set that reflection serves, and the few
//! facts every side of a contract must agree on: which RPCs exist, who may call
//! them and which only read ([`RPCS`]), the largest page ([`MAX_PAGE_SIZE`]), and how an error names its
//! reason ([`errors`]).

/// Users and login (`agora.auth.v1`).
pub mod auth {
    pub mod v1 {
        // Proto comments wrap list items the way every language's docs read them.
        #![allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items)]
        tonic::include_proto!("agora.auth.v1");
        include!(concat!(env!("OUT_DIR"), "/servers/agora.auth.v1.rs"));
    }
}

/// Posts (`agora.posts.v1`).
pub mod posts {
    pub mod v1 {
        // Proto comments wrap list items the way every language's docs read them.
        #![allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items)]
        tonic::include_proto!("agora.posts.v1");
        include!(concat!(env!("OUT_DIR"), "/servers/agora.posts.v1.rs"));
    }
}

/// Likes (`agora.votes.v1`).
pub mod votes {
    pub mod v1 {
        // Proto comments wrap list items the way every language's docs read them.
        #![allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items)]
        tonic::include_proto!("agora.votes.v1");
        include!(concat!(env!("OUT_DIR"), "/servers/agora.votes.v1.rs"));
    }
}

pub mod codec;
pub mod errors;

/// The most posts one page holds and the most ids one batch call takes, as the
/// contracts state: a page's owners and like counts are fetched in one batch each.
pub const MAX_PAGE_SIZE: usize = 100;

/// One RPC of the Agora API: who may call it, where, and whether repeating it is
/// harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rpc {
    /// The fully qualified service name, from the generated code.
    pub service: &'static str,
    pub method: &'static str,
    /// Whether a call needs an access token.
    pub needs_token: bool,
    /// Whether the gateway serves it. The others are internal: services call them
    /// on each other, and the gateway answers them UNIMPLEMENTED.
    pub public: bool,
    /// Whether it only reads, so that a call whose answer was lost can be sent
    /// again without changing anything. The contract says so too, as
    /// `idempotency_level = NO_SIDE_EFFECTS` (a test holds the two equal).
    pub read_only: bool,
}

impl Rpc {
    /// An internal method that needs a token and may write: the safe defaults,
    /// which the other constructors relax.
    const fn new(service: &'static str, method: &'static str) -> Self {
        Self {
            service,
            method,
            needs_token: true,
            public: false,
            read_only: false,
        }
    }

    const fn public(self) -> Self {
        Self {
            public: true,
            ..self
        }
    }

    const fn without_token(self) -> Self {
        Self {
            needs_token: false,
            ..self
        }
    }

    const fn read_only(self) -> Self {
        Self {
            read_only: true,
            ..self
        }
    }

    /// The HTTP/2 path of the RPC, `/package.Service/Method`.
    pub fn path(&self) -> String {
        format!("/{}/{}", self.service, self.method)
    }

    /// The RPC served at `path`, if it is one of Agora's.
    pub fn at(path: &str) -> Option<&'static Rpc> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        RPCS.iter()
            .find(|rpc| rpc.service == service && rpc.method == method)
    }
}

const USERS: &str = auth::v1::user_service_server::SERVICE_NAME;
const AUTH: &str = auth::v1::auth_service_server::SERVICE_NAME;
const POSTS: &str = posts::v1::post_service_server::SERVICE_NAME;
const VOTES: &str = votes::v1::vote_service_server::SERVICE_NAME;

/// Every Agora RPC, once. The servers' token checks, the gateway's routes and
/// which calls may be retried are derived from this list; a test holds it equal
/// to the descriptors.
pub const RPCS: &[Rpc] = &[
    Rpc::new(USERS, "CreateUser").public().without_token(),
    Rpc::new(USERS, "GetUser").public().read_only(),
    Rpc::new(USERS, "ChangePassword").public(),
    Rpc::new(USERS, "DeleteUser").public(),
    Rpc::new(USERS, "BatchGetUsers").read_only(),
    Rpc::new(AUTH, "Login").public().without_token(),
    Rpc::new(AUTH, "RefreshToken").public().without_token(),
    Rpc::new(AUTH, "Logout").public(),
    Rpc::new(AUTH, "LogoutAll").public(),
    Rpc::new(AUTH, "ListSessions").public().read_only(),
    Rpc::new(AUTH, "VerifyToken").without_token().read_only(),
    Rpc::new(AUTH, "GetJwks").without_token().read_only(),
    Rpc::new(AUTH, "ListRevokedSessions")
        .without_token()
        .read_only(),
    Rpc::new(POSTS, "CreatePost").public(),
    Rpc::new(POSTS, "GetPost").public().read_only(),
    Rpc::new(POSTS, "ListPosts").public().read_only(),
    Rpc::new(POSTS, "UpdatePost").public(),
    Rpc::new(POSTS, "DeletePost").public(),
    Rpc::new(POSTS, "WatchPosts").public().read_only(),
    Rpc::new(VOTES, "Vote").public(),
    Rpc::new(VOTES, "CountVotes").read_only(),
];

/// Every Agora message and service, encoded as a `FileDescriptorSet`, for
/// `grpc.reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("agora_descriptor");

/// [`FILE_DESCRIPTOR_SET`], decoded.
pub fn file_descriptor_set() -> prost_types::FileDescriptorSet {
    prost::Message::decode(FILE_DESCRIPTOR_SET).expect("the embedded descriptor set decodes")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_rpc_list_names_every_rpc_of_the_contracts_once() {
        let declared: BTreeSet<String> = file_descriptor_set()
            .file
            .iter()
            .filter(|file| file.package().starts_with("agora."))
            .flat_map(|file| {
                file.service.iter().flat_map(move |service| {
                    service.method.iter().map(move |method| {
                        format!("/{}.{}/{}", file.package(), service.name(), method.name())
                    })
                })
            })
            .collect();
        let listed: Vec<String> = RPCS.iter().map(Rpc::path).collect();
        let unique: BTreeSet<String> = listed.iter().cloned().collect();
        assert_eq!(unique.len(), listed.len(), "an RPC is listed twice");
        assert_eq!(unique, declared);
        for rpc in RPCS {
            assert_eq!(Rpc::at(&rpc.path()), Some(rpc));
        }
        assert_eq!(Rpc::at("/agora.posts.v1.PostService/Nope"), None);
    }

    #[test]
    fn exactly_the_read_only_rpcs_are_declared_free_of_side_effects() {
        use prost_types::method_options::IdempotencyLevel;
        for file in file_descriptor_set().file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    let Some(rpc) = Rpc::at(&path) else { continue };
                    let declared = method
                        .options
                        .as_ref()
                        .map(|options| options.idempotency_level());
                    assert_eq!(
                        declared == Some(IdempotencyLevel::NoSideEffects),
                        rpc.read_only,
                        "{path}: idempotency_level = NO_SIDE_EFFECTS exactly when read_only"
                    );
                }
            }
        }
        assert_eq!(Rpc::at("nonsense"), None);
    }
}
