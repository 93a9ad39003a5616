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
)


class CheckFailed(Exception):
    """A check's outcome differs from what the contract promises."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"expected {expected}, got {got}")
        self.expected = expected
        self.got = got


def expect(condition: bool, expected: str, got: Any) -> None:
    if not condition:
        raise CheckFailed(expected, str(got))


def describe_error(error: grpc.RpcError) -> str:
    return f"{error.code().name}: {error.details()}"


def expect_error(call: Callable[[], Any], code: grpc.StatusCode) -> grpc.RpcError:
    """Runs `call`, which must fail with `code`; returns the error."""
    try:
        response = call()
    except grpc.RpcError as error:
        expect(error.code() == code, code.name, describe_error(error))
        return error
    raise CheckFailed(code.name, f"success: {response!r}".replace("\n", " "))


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
                    "agora/posts/v1", "agora/votes", "agora/votes/v1"):
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
                )
            }
            return f"{len(PROTO_FILES)} files from {self.proto_dir} compiled and imported"

        self.check("generate stubs", stubs)
        self.scenario()

    def scenario(self) -> None:
        from google.protobuf import field_mask_pb2
        from google.rpc import error_details_pb2
        from grpc_status import rpc_status

        users_pb2 = self.m["auth.v1.users_pb2"]
        auth_pb2 = self.m["auth.v1.auth_pb2"]
        posts_pb2 = self.m["posts.v1.posts_pb2"]
        votes_pb2 = self.m["votes.v1.votes_pb2"]

        auth_channel = self.channel(self.target)
        users = self.m["auth.v1.users_pb2_grpc"].UserServiceStub(auth_channel)
        auth = self.m["auth.v1.auth_pb2_grpc"].AuthServiceStub(auth_channel)
        posts = self.m["posts.v1.posts_pb2_grpc"].PostServiceStub(
            self.channel(self.posts_target))
        votes = self.m["votes.v1.votes_pb2_grpc"].VoteServiceStub(
            self.channel(self.votes_target))

        run_id = uuid.uuid4().hex
        email = f"py-{run_id}@example.com"
        password = "correct horse battery"
        title = f"Hello from Python {run_id}"
        content = "Written through stubs generated from proto/."
        state: dict[str, Any] = {}

        def create_user() -> str:
            response = users.CreateUser(
                users_pb2.CreateUserRequest(email=email, password=password),
                timeout=DEADLINE_SECS)
            expect(response.user.id != "", "a user id", repr(response.user.id))
            expect(response.user.email == email, f"email {email}", response.user.email)
            state["user_id"] = response.user.id
            return f"user {response.user.id}"

        def login() -> str:
            response = auth.Login(
                auth_pb2.LoginRequest(email=email, password=password),
                timeout=DEADLINE_SECS)
            expect(response.token_type == "bearer", "token_type 'bearer'",
                   repr(response.token_type))
            expect(response.access_token != "", "an access token", "an empty one")
            expect(response.expires_in > 0, "expires_in > 0", response.expires_in)
            state["auth"] = [("authorization", f"Bearer {response.access_token}")]
            return f"bearer token, expires in {response.expires_in} s"

        def create_post() -> str:
            response = posts.CreatePost(
                posts_pb2.CreatePostRequest(title=title, content=content),
                metadata=state["auth"], timeout=DEADLINE_SECS)
            post = response.post
            expect(post.id != "", "a post id", repr(post.id))
            expect(post.title == title, f"title {title!r}", repr(post.title))
            expect(post.content == content, f"content {content!r}", repr(post.content))
            expect(post.published, "published true (the default)", post.published)
            expect(post.owner_id == state["user_id"], f"owner_id {state['user_id']}",
                   post.owner_id)
            state["post_id"] = post.id
            return f"post {post.id}"

        def get_post() -> str:
            post = posts.GetPost(posts_pb2.GetPostRequest(id=state["post_id"]),
                                 metadata=state["auth"], timeout=DEADLINE_SECS).post
            expect(post.id == state["post_id"], f"id {state['post_id']}", post.id)
            expect(post.title == title, f"title {title!r}", repr(post.title))
            expect(post.owner.email == email, f"owner.email {email}", post.owner.email)
            expect(post.like_count == 0, "like_count 0", post.like_count)
            return "same post, owner and no likes"

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
            expect(post.like_count == 1, "like_count 1", post.like_count)
            expect(post.liked_by_caller, "liked_by_caller true", post.liked_by_caller)
            expect(post.owner.email == email, f"owner.email {email}", post.owner.email)
            return "listed with like_count 1, liked_by_caller, owner"

        def update_title() -> str:
            new_title = f"Hello again {run_id}"
            post = posts.UpdatePost(
                posts_pb2.UpdatePostRequest(
                    id=state["post_id"], title=new_title, content="ignored",
                    update_mask=field_mask_pb2.FieldMask(paths=["title"])),
                metadata=state["auth"], timeout=DEADLINE_SECS).post
            expect(post.title == new_title, f"title {new_title!r}", repr(post.title))
            expect(post.content == content, f"content unchanged {content!r}",
                   repr(post.content))
            expect(post.published, "published unchanged (true)", post.published)
            return "only the title changed"

        def create_user_invalid() -> str:
            error = expect_error(
                lambda: users.CreateUser(
                    users_pb2.CreateUserRequest(email="nope", password="short"),
                    timeout=DEADLINE_SECS),
                grpc.StatusCode.INVALID_ARGUMENT)
            status = rpc_status.from_call(error)
            expect(status is not None, "a google.rpc.Status in grpc-status-details-bin",
                   "none")
            expect(len(status.details) > 0, "at least one status detail", "none")
            bad_request = error_details_pb2.BadRequest()
            expect(status.details[0].Unpack(bad_request),
                   "details[0] to be a google.rpc.BadRequest", status.details[0].type_url)
            fields = sorted(v.field for v in bad_request.field_violations)
            expect(fields == ["email", "password"],
                   "field violations for email and password", fields)
            return "INVALID_ARGUMENT with BadRequest naming email and password"

        def get_post_anonymous() -> str:
            expect_error(
                lambda: posts.GetPost(posts_pb2.GetPostRequest(id=state["post_id"]),
                                      timeout=DEADLINE_SECS),
                grpc.StatusCode.UNAUTHENTICATED)
            return "UNAUTHENTICATED"

        def vote_again() -> str:
            expect_error(
                lambda: votes.Vote(
                    votes_pb2.VoteRequest(post_id=state["post_id"],
                                          direction=votes_pb2.VOTE_DIRECTION_ADD),
                    metadata=state["auth"], timeout=DEADLINE_SECS),
                grpc.StatusCode.ALREADY_EXISTS)
            return "ALREADY_EXISTS"

        def delete_post() -> str:
            posts.DeletePost(posts_pb2.DeletePostRequest(id=state["post_id"]),
                             metadata=state["auth"], timeout=DEADLINE_SECS)
            return "deleted"

        def get_deleted() -> str:
            expect_error(
                lambda: posts.GetPost(posts_pb2.GetPostRequest(id=state["post_id"]),
                                      metadata=state["auth"], timeout=DEADLINE_SECS),
                grpc.StatusCode.NOT_FOUND)
            return "NOT_FOUND"

        self.check("UserService/CreateUser", create_user)
        self.check("AuthService/Login", login)
        self.check("PostService/CreatePost", create_post)
        self.check("PostService/GetPost", get_post)
        self.check("VoteService/Vote ADD", vote_add)
        self.check("PostService/ListPosts", list_posts)
        self.check("PostService/UpdatePost title only", update_title)
        self.check("UserService/CreateUser invalid", create_user_invalid)
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
