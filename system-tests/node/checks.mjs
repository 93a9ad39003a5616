// The checks every Connect client here runs: a whole session (register, log in,
// write, read, like, list) and the errors a caller must be able to branch on,
// once per transport. Code generated from proto/ by protoc-gen-es (`npm run
// generate`, into gen/).

import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";

import { AuthService } from "./gen/agora/auth/v1/auth_pb.js";
import { UserService } from "./gen/agora/auth/v1/users_pb.js";
import { PostService } from "./gen/agora/posts/v1/posts_pb.js";
import { VoteDirection, VoteService } from "./gen/agora/votes/v1/votes_pb.js";
import { ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";

/**
 * Runs every check over each of `transports` (name to transport), printing one
 * line per check with `print`; returns the counts.
 */
export async function runChecks(transports, print) {
  let passed = 0;
  let failed = 0;

  async function check(name, step) {
    try {
      const detail = await step();
      passed += 1;
      print(`ok   ${name}: ${detail}`);
    } catch (error) {
      failed += 1;
      print(`FAIL ${name}: ${error instanceof ConnectError ? describe(error) : error}`);
    }
  }

  function expect(condition, expected, got) {
    if (!condition) {
      throw new Error(`expected ${expected}, got ${JSON.stringify(got)}`);
    }
  }

  function describe(error) {
    const info = error.findDetails(ErrorInfoSchema)[0];
    return `${Code[error.code]}: ${error.rawMessage}${info ? ` (reason ${info.domain}/${info.reason})` : ""}`;
  }

  // The call must fail with `code` and an ErrorInfo with domain agora and `reason`.
  async function expectError(call, code, reason) {
    try {
      const answer = await call();
      throw new Error(`expected ${Code[code]} ${reason}, got success: ${JSON.stringify(answer)}`);
    } catch (error) {
      if (!(error instanceof ConnectError)) throw error;
      const info = error.findDetails(ErrorInfoSchema)[0];
      expect(
        error.code === code && info?.domain === "agora" && info?.reason === reason,
        `${Code[code]} with reason agora/${reason}`,
        describe(error),
      );
      return describe(error);
    }
  }

  for (const [name, transport] of Object.entries(transports)) {
    const users = createClient(UserService, transport);
    const auth = createClient(AuthService, transport);
    const posts = createClient(PostService, transport);
    const votes = createClient(VoteService, transport);
    const email = `connect-${crypto.randomUUID()}@example.com`;
    const password = "correct horse battery staple";
    let headers;
    let post;

    await check(`${name}: register`, async () => {
      const { user } = await users.createUser({ email, password });
      expect(user?.email === email, `the new user with ${email}`, user);
      return `user ${user.id}`;
    });
    await check(`${name}: log in`, async () => {
      const answer = await auth.login({ email, password });
      expect(answer.accessToken.length > 0 && answer.tokenType === "bearer", "a bearer token", answer);
      headers = { authorization: `Bearer ${answer.accessToken}` };
      return `token expires in ${answer.expiresIn?.seconds}s`;
    });
    await check(`${name}: create a post`, async () => {
      const answer = await posts.createPost(
        { post: { title: "Over Connect", content: `over ${name}` } },
        { headers },
      );
      post = answer.post;
      expect(post?.title === "Over Connect" && post.published, "the post, published", post);
      return `post ${post.id}`;
    });
    await check(`${name}: read it back`, async () => {
      const answer = await posts.getPost({ id: post.id }, { headers });
      expect(answer.post?.content === `over ${name}`, "the same content", answer.post);
      expect(answer.post?.createTime !== undefined, "a create time", answer.post);
      return `etag ${answer.post.etag}`;
    });
    await check(`${name}: like it`, async () => {
      const answer = await votes.vote({ postId: post.id, direction: VoteDirection.ADD }, { headers });
      expect(answer.likeCount === 1n, "one like (an int64, a bigint)", String(answer.likeCount));
      return `${answer.likeCount} like`;
    });
    await check(`${name}: find it among its owner's posts`, async () => {
      const answer = await posts.listPosts({ ownerId: post.ownerId }, { headers });
      const found = answer.posts.find((listed) => listed.id === post.id);
      expect(found?.likeCount === 1n && found.likedByCaller, "the post, liked by the caller", found);
      return `${answer.posts.length} posts`;
    });
    await check(`${name}: an unknown post is NOT_FOUND`, () =>
      expectError(
        () => posts.getPost({ id: "01900000-0000-7000-8000-000000000000" }, { headers }),
        Code.NotFound,
        "POST_NOT_FOUND",
      ),
    );
    await check(`${name}: no token is UNAUTHENTICATED`, () =>
      expectError(
        () => posts.createPost({ post: { title: "t", content: "c" } }),
        Code.Unauthenticated,
        "TOKEN_MISSING",
      ),
    );
    await check(`${name}: a blank title is INVALID_ARGUMENT`, () =>
      expectError(
        () => posts.createPost(create(PostService.method.createPost.input, { post: { title: " ", content: "c" } }), { headers }),
        Code.InvalidArgument,
        "INVALID_FIELDS",
      ),
    );
    await check(`${name}: a deadline travels`, async () => {
      const answer = await posts.listPosts({ pageSize: 1 }, { headers, timeoutMs: 5000 });
      expect(answer.posts.length === 1, "one post", answer.posts.length);
      return "answered within 5 s";
    });
  }

  return { passed, failed };
}
