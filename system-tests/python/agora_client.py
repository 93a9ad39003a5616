#!/usr/bin/env python3
"""Agora through Python stubs generated from proto/ at run time.

Usage:
    python3 agora_client.py HOST:PORT [--proto-dir DIR] [--posts ADDR] [--votes ADDR]

HOST:PORT serves every Agora service (the gateway). --posts and --votes send the
PostService and VoteService calls elsewhere, for running against the separate
services (auth on HOST:PORT). Needs grpcio, grpcio-tools, grpcio-status and
protobuf. Prints one line per check and then exactly one summary line,
`python client: N passed, M failed`; exits 0 only when everything passed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.resources
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable

import grpc

DEADLINE_SECS = 10.0
PROTO_FILES = (
    "agora/auth/v1/users.proto",
    "agora/auth/v1/auth.proto",
    "agora/posts/v1/posts.proto",
    "agora/votes/v1/votes.proto",
    "agora/errors/v1/errors.proto",
)
ERROR_DOMAIN = "agora"
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


class CheckFailed(Exception):
    """A check's outcome differs from what the contract promises."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"expected {expected}, got {got}")
        self.expected = expected
        self.got = got


def expect(condition: bool, expected: str, got: Any) -> None:
    if not condition:
        raise CheckFailed(expected, str(got))


def status_details(error: grpc.RpcError) -> list[Any]:
    """The `google.rpc.Status` details of a failed call (grpc-status-details-bin)."""
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)
    return list(status.details) if status is not None else []


def error_info(error: grpc.RpcError) -> Any | None:
    """The `google.rpc.ErrorInfo` among the error's details, if any."""
    from google.rpc import error_details_pb2

    for detail in status_details(error):
        if detail.type_url == ERROR_INFO_TYPE:
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def describe_error(error: grpc.RpcError) -> str:
    described = f"{error.code().name}: {error.details()}"
    try:
        info = error_info(error)
    except Exception:  # a malformed status: say what is there
        info = None
    if info is not None:
        described += f" (reason {info.domain}/{info.reason})"
    return described


def expect_error(call: Callable[[], Any], code: grpc.StatusCode,
                 reason: str) -> grpc.RpcError:
    """Runs `call`, which must fail with `code` and a `google.rpc.ErrorInfo` with
    domain `agora` and `reason`; returns the error."""
    expected = f"{code.name} with reason {reason}"
    try:
        response = call()
    except grpc.RpcError as error:
        expect(error.code() == code, expected, describe_error(error))
        info = error_info(error)
        expect(info is not None, f"{expected}: a google.rpc.ErrorInfo detail",
               [detail.type_url for detail in status_details(error)])
        expect((info.domain, info.reason) == (ERROR_DOMAIN, reason),
               f"{expected}, domain {ERROR_DOMAIN}", f"{info.domain}/{info.reason}")
        return error
    raise CheckFailed(expected, f"success: {response!r}".replace("\n", " "))


def generate_stubs(proto_dir: Path, out_dir: Path) -> None:
    """Compiles proto/ into Python modules under `out_dir` with grpc_tools.protoc."""
    from grpc_tools import protoc

    for name in PROTO_FILES:
        if not (proto_dir / name).is_file():
            raise CheckFailed(f"{name} under {proto_dir}", "no such file")
    # The well-known types (timestamp, field_mask) ship with grpc_tools.
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *PROTO_FILES,
    ]
    exit_code = protoc.main(args)
    expect(exit_code == 0, "protoc to exit 0", exit_code)
    # Regular packages, so that no other `agora` on sys.path can shadow these.
    for package in ("agora", "agora/auth", "agora/auth/v1", "agora/posts",
                    "agora/posts/v1", "agora/votes", "agora/votes/v1",
                    "agora/errors", "agora/errors/v1"):
        (out_dir / package / "__init__.py").touch()


class Client:
    def __init__(self, target: str, posts: str, votes: str, proto_dir: Path) -> None:
        self.target, self.posts_target, self.votes_target = target, posts, votes
        self.proto_dir = proto_dir
        self.passed = 0
        self.channels: list[grpc.Channel] = []

    def check(self, name: str, step: Callable[[], str]) -> None:
        """Runs one check and prints its line; raises CheckFailed on failure."""
        try:
            detail = step()
        except CheckFailed as failure:
            print(f"FAIL {name}: {failure}", flush=True)
            raise
        except grpc.RpcError as error:
            print(f"FAIL {name}: expected success, got {describe_error(error)}", flush=True)
            raise CheckFailed("success", describe_error(error)) from error
        except Exception as error:  # a broken proto tree, an import error, ...
            got = f"{type(error).__name__}: {error}"
            print(f"FAIL {name}: expected success, got {got}", flush=True)
            raise CheckFailed("success", got) from error
        self.passed += 1
        print(f"ok   {name}: {detail}", flush=True)

    def channel(self, target: str) -> grpc.Channel:
        channel = grpc.insecure_channel(target)
        self.channels.append(channel)
        return channel

    def close(self) -> None:
        for channel in self.channels:
            channel.close()

    def run(self, stub_dir: Path) -> None:
        def stubs() -> str:
            generate_stubs(self.proto_dir, stub_dir)
            sys.path.insert(0, str(stub_dir))
            self.m = {
                name: importlib.import_module(f"agora.{name}")
                for name in (
                    "auth.v1.users_pb2", "auth.v1.users_pb2_grpc",
                    "auth.v1.auth_pb2", "auth.v1.auth_pb2_grpc",
                    "posts.v1.posts_pb2", "posts.v1.posts_pb2_grpc",
                    "votes.v1.votes_pb2", "votes.v1.votes_pb2_grpc",
                    "errors.v1.errors_pb2",
                )
            }
            return f"{len(PROTO_FILES)} files from {self.proto_dir} compiled and imported"

        self.check("generate stubs", stubs)
        self.scenario()

    def scenario(self) -> None:
        from google.protobuf import field_mask_pb2
        from google.rpc import error_details_pb2

        users_pb2 = self.m["auth.v1.users_pb2"]
        auth_pb2 = self.m["auth.v1.auth_pb2"]
        posts_pb2 = self.m["posts.v1.posts_pb2"]
        votes_pb2 = self.m["votes.v1.votes_pb2"]
        errors_pb2 = self.m["errors.v1.errors_pb2"]

        auth_channel = self.channel(self.target)
        users = self.m["auth.v1.users_pb2_grpc"].UserServiceStub(auth_channel)
        auth = self.m["auth.v1.auth_pb2_grpc"].AuthServiceStub(auth_channel)
        posts = self.m["posts.v1.posts_pb2_grpc"].PostServiceStub(
            self.channel(self.posts_target))
        votes = self.m["votes.v1.votes_pb2_grpc"].VoteServiceStub(
            self.channel(self.votes_target))

        def reason(name: str) -> str:
            """`name` as an ErrorInfo reason, checked against agora.errors.v1."""
            errors_pb2.ErrorReason.Value(f"ERROR_REASON_{name}")  # ValueError if unknown
            return name

        run_id = uuid.uuid4().hex
        email = f"py-{run_id}@example.com"
        other_email = f"py-other-{run_id}@example.com"
        password = "correct horse battery"
        title = f"Hello from Python {run_id}"
        content = "Written through stubs generated from proto/."
        state: dict[str, Any] = {}

        def register(address: str) -> Any:
            return users.CreateUser(
                users_pb2.CreateUserRequest(email=address, password=password,
                                            request_id=str(uuid.uuid4())),
                timeout=DEADLINE_SECS).user

        def create_user() -> str:
            user = register(email)
            expect(user.id != "", "a user id", repr(user.id))
            expect(user.email == email, f"email {email}", user.email)
            expect(user.HasField("create_time"), "a create_time", "none")
            state["user_id"] = user.id
            other = register(other_email)
            expect(other.id not in ("", user.id), "another user id", repr(other.id))
            state["other_id"] = other.id
            return f"users {user.id} and {other.id}"

        def login() -> str:
            response = auth.Login(
                auth_pb2.LoginRequest(email=email, password=password),
                timeout=DEADLINE_SECS)
            expect(response.token_type == "bearer", "token_type 'bearer'",
                   repr(response.token_type))
            expect(response.access_token != "", "an access token", "an empty one")
            expires_in = response.expires_in.ToTimedelta().total_seconds()
            expect(expires_in > 0, "expires_in > 0 (a Duration)", expires_in)
            expect(response.HasField("expire_time"), "an expire_time", "none")
            try:
                uuid.UUID(response.session_id)
            except ValueError:
                raise CheckFailed("session_id to be a UUID",
                                  repr(response.session_id)) from None
            state["auth"] = [("authorization", f"Bearer {response.access_token}")]
            return (f"bearer token, expires in {expires_in:.0f} s, "
                    f"session {response.session_id}")

        def get_user_self() -> str:
            user = users.GetUser(users_pb2.GetUserRequest(id=state["user_id"]),
                                 metadata=state["auth"], timeout=DEADLINE_SECS).user
            expect(user.id == state["user_id"], f"id {state['user_id']}", user.id)
            expect(user.email == email, f"own email {email}", repr(user.email))
            return "own email shown"

        def get_user_other() -> str:
            user = users.GetUser(users_pb2.GetUserRequest(id=state["other_id"]),
                                 metadata=state["auth"], timeout=DEADLINE_SECS).user
            expect(user.id == state["other_id"], f"id {state['other_id']}", user.id)
            expect(user.email == "", "no email of another person", repr(user.email))
            return "another person's email is empty"

        def create_post() -> str:
            response = posts.CreatePost(
                posts_pb2.CreatePostRequest(
                    # Output-only fields are ignored.
                    post=posts_pb2.Post(title=title, content=content,
                                        owner_id=state["other_id"], like_count=7),
                    request_id=str(uuid.uuid4())),
                metadata=state["auth"], timeout=DEADLINE_SECS)
            post = response.post
            expect(post.id != "", "a post id", repr(post.id))
            expect(post.title == title, f"title {title!r}", repr(post.title))
            expect(post.content == content, f"content {content!r}", repr(post.content))
            expect(post.HasField("published") and post.published,
                   "published true (absent means true)", post.published)
            expect(post.owner_id == state["user_id"], f"owner_id {state['user_id']}",
                   post.owner_id)
            expect(post.etag != "", "an etag", "an empty one")
            state["post_id"], state["etag"] = post.id, post.etag
            return f"post {post.id}, etag {post.etag!r}"

        def get_post() -> str:
            post = posts.GetPost(posts_pb2.GetPostRequest(id=state["post_id"]),
                                 metadata=state["auth"], timeout=DEADLINE_SECS).post
            expect(post.id == state["post_id"], f"id {state['post_id']}", post.id)
            expect(post.title == title, f"title {title!r}", repr(post.title))
            expect(post.HasField("owner") and post.owner.id == state["user_id"],
                   f"owner.id {state['user_id']}", post.owner.id)
            expect(post.owner.HasField("create_time"), "owner.create_time", "none")
            expect(post.HasField("like_count") and post.like_count == 0,
                   "like_count present and 0", post.like_count)
            expect(post.HasField("liked_by_caller") and not post.liked_by_caller,
                   "liked_by_caller present and false", post.liked_by_caller)
            expect(post.etag == state["etag"], f"etag {state['etag']!r}", repr(post.etag))
            return "same post, owner profile and no likes"

        def vote_add() -> str:
            response = votes.Vote(
                votes_pb2.VoteRequest(post_id=state["post_id"],
                                      direction=votes_pb2.VOTE_DIRECTION_ADD),
                metadata=state["auth"], timeout=DEADLINE_SECS)
            expect(response.like_count == 1, "like_count 1", response.like_count)
            return "like_count 1"

        def list_posts() -> str:
            response = posts.ListPosts(
                posts_pb2.ListPostsRequest(page_size=100, search=run_id),
                metadata=state["auth"], timeout=DEADLINE_SECS)
            found = [p for p in response.posts if p.id == state["post_id"]]
            expect(len(found) == 1, f"post {state['post_id']} listed once",
                   [p.id for p in response.posts])
            post = found[0]
            expect(post.HasField("like_count") and post.like_count == 1,
                   "like_count 1", post.like_count)
            expect(post.liked_by_caller, "liked_by_caller true", post.liked_by_caller)
            expect(post.owner.id == state["user_id"], f"owner.id {state['user_id']}",
                   post.owner.id)
            return "listed with like_count 1, liked_by_caller, owner"

        def update_title() -> str:
            new_title = f"Hello again {run_id}"
            post = posts.UpdatePost(
                posts_pb2.UpdatePostRequest(
                    post=posts_pb2.Post(id=state["post_id"], title=new_title,
                                        content="ignored", etag=state["etag"]),
                    update_mask=field_mask_pb2.FieldMask(paths=["title"])),
                metadata=state["auth"], timeout=DEADLINE_SECS).post
            expect(post.title == new_title, f"title {new_title!r}", repr(post.title))
            expect(post.content == content, f"content unchanged {content!r}",
                   repr(post.content))
            expect(post.published, "published unchanged (true)", post.published)
            expect(post.etag not in ("", state["etag"]), "a new etag", repr(post.etag))
            state["stale_etag"], state["etag"] = state["etag"], post.etag
            state["title"] = new_title
            return f"only the title changed, etag now {post.etag!r}"

        def update_without_mask() -> str:
            new_content = "Changed without a mask."
            post = posts.UpdatePost(
                posts_pb2.UpdatePostRequest(
                    post=posts_pb2.Post(id=state["post_id"], content=new_content)),
                metadata=state["auth"], timeout=DEADLINE_SECS).post
            expect(post.content == new_content, f"content {new_content!r}",
                   repr(post.content))
            expect(post.title == state["title"], f"title unchanged {state['title']!r}",
                   repr(post.title))
            expect(post.published, "published unchanged (true)", post.published)
            state["etag"] = post.etag
            return "no mask: only the field set changed"

        def update_stale_etag() -> str:
            expect_error(
                lambda: posts.UpdatePost(
                    posts_pb2.UpdatePostRequest(
                        post=posts_pb2.Post(id=state["post_id"], title="Too late",
                                            etag=state["stale_etag"])),
                    metadata=state["auth"], timeout=DEADLINE_SECS),
                grpc.StatusCode.ABORTED, reason("ETAG_MISMATCH"))
            return "ABORTED ETAG_MISMATCH"

        def bad_request_fields(error: grpc.RpcError) -> list[str]:
            found = [d for d in status_details(error) if d.type_url == BAD_REQUEST_TYPE]
            expect(len(found) == 1, "one google.rpc.BadRequest detail",
                   [d.type_url for d in status_details(error)])
            bad_request = error_details_pb2.BadRequest()
            found[0].Unpack(bad_request)
            return sorted(v.field for v in bad_request.field_violations)

        def create_user_invalid() -> str:
            error = expect_error(
                lambda: users.CreateUser(
                    users_pb2.CreateUserRequest(email="nope", password="short"),
                    timeout=DEADLINE_SECS),
                grpc.StatusCode.INVALID_ARGUMENT, reason("INVALID_FIELDS"))
            fields = bad_request_fields(error)
            expect(fields == ["email", "password"],
                   "field violations for email and password", fields)
            return "INVALID_FIELDS with BadRequest naming email and password"

        def create_post_invalid() -> str:
            error = expect_error(
                lambda: posts.CreatePost(
                    posts_pb2.CreatePostRequest(
                        post=posts_pb2.Post(title="", content=content)),
                    metadata=state["auth"], timeout=DEADLINE_SECS),
                grpc.StatusCode.INVALID_ARGUMENT, reason("INVALID_FIELDS"))
            fields = bad_request_fields(error)
            expect(fields == ["post.title"], "a field violation for post.title", fields)
            return "INVALID_FIELDS with BadRequest naming post.title"

        def get_post_anonymous() -> str:
            expect_error(
                lambda: posts.GetPost(posts_pb2.GetPostRequest(id=state["post_id"]),
                                      timeout=DEADLINE_SECS),
                grpc.StatusCode.UNAUTHENTICATED, reason("TOKEN_MISSING"))
            return "UNAUTHENTICATED TOKEN_MISSING"

        def vote_again() -> str:
            expect_error(
                lambda: votes.Vote(
                    votes_pb2.VoteRequest(post_id=state["post_id"],
                                          direction=votes_pb2.VOTE_DIRECTION_ADD),
                    metadata=state["auth"], timeout=DEADLINE_SECS),
                grpc.StatusCode.ALREADY_EXISTS, reason("ALREADY_LIKED"))
            return "ALREADY_EXISTS ALREADY_LIKED"

        def delete_post() -> str:
            posts.DeletePost(
                posts_pb2.DeletePostRequest(id=state["post_id"], etag=state["etag"]),
                metadata=state["auth"], timeout=DEADLINE_SECS)
            return "deleted at its current etag"

        def get_deleted() -> str:
            expect_error(
                lambda: posts.GetPost(posts_pb2.GetPostRequest(id=state["post_id"]),
                                      metadata=state["auth"], timeout=DEADLINE_SECS),
                grpc.StatusCode.NOT_FOUND, reason("POST_NOT_FOUND"))
            return "NOT_FOUND POST_NOT_FOUND"

        self.check("UserService/CreateUser", create_user)
        self.check("AuthService/Login", login)
        self.check("UserService/GetUser self", get_user_self)
        self.check("UserService/GetUser another person", get_user_other)
        self.check("PostService/CreatePost", create_post)
        self.check("PostService/GetPost", get_post)
        self.check("VoteService/Vote ADD", vote_add)
        self.check("PostService/ListPosts", list_posts)
        self.check("PostService/UpdatePost title only, at its etag", update_title)
        self.check("PostService/UpdatePost without a mask", update_without_mask)
        self.check("PostService/UpdatePost stale etag", update_stale_etag)
        self.check("UserService/CreateUser invalid", create_user_invalid)
        self.check("PostService/CreatePost invalid", create_post_invalid)
        self.check("PostService/GetPost without token", get_post_anonymous)
        self.check("VoteService/Vote ADD again", vote_again)
        self.check("PostService/DeletePost", delete_post)
        self.check("PostService/GetPost deleted", get_deleted)


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Checks Agora through Python stubs generated from proto/.")
    parser.add_argument("target", metavar="HOST:PORT",
                        help="the gRPC endpoint serving every Agora service")
    parser.add_argument("--proto-dir", type=Path,
                        default=Path(__file__).resolve().parent / ".." / ".." / "proto",
                        help="the proto/ folder (default: ../../proto from this script)")
    parser.add_argument("--posts", metavar="ADDR",
                        help="send PostService calls here instead of HOST:PORT")
    parser.add_argument("--votes", metavar="ADDR",
                        help="send VoteService calls here instead of HOST:PORT")
    args = parser.parse_args()

    client = Client(args.target, args.posts or args.target, args.votes or args.target,
                    args.proto_dir.resolve())
    failed = 0
    try:
        with tempfile.TemporaryDirectory(prefix="agora-stubs-") as stub_dir:
            client.run(Path(stub_dir))
    except CheckFailed:
        failed = 1
    finally:
        client.close()
    print(f"python client: {client.passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
