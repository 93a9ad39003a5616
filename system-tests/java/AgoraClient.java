import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.AbstractStub;
import io.grpc.stub.MetadataUtils;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import social.agora.auth.v1.AuthServiceGrpc;
import social.agora.auth.v1.CreateUserRequest;
import social.agora.auth.v1.LoginRequest;
import social.agora.auth.v1.LoginResponse;
import social.agora.auth.v1.User;
import social.agora.auth.v1.UserServiceGrpc;
import social.agora.errors.v1.ErrorReason;
import social.agora.posts.v1.CreatePostRequest;
import social.agora.posts.v1.GetPostRequest;
import social.agora.posts.v1.ListPostsRequest;
import social.agora.posts.v1.Post;
import social.agora.posts.v1.PostServiceGrpc;
import social.agora.votes.v1.VoteDirection;
import social.agora.votes.v1.VoteRequest;
import social.agora.votes.v1.VoteServiceGrpc;

/**
 * Agora through Java stubs generated from proto/ (see proto/README.md, "Clients in
 * other languages").
 *
 * <p>Usage: {@code java -cp <stubs and jars> AgoraClient HOST:PORT}, HOST:PORT being
 * the gateway. Walks one scenario with a fresh email: register, log in, write, read,
 * like and list a post, then errors, each checked by the {@code google.rpc.ErrorInfo}
 * that {@code grpc-status-details-bin} carries. Prints one line per check, then
 * exactly one summary line, {@code java client: N passed, M failed}; exits 0 only
 * when everything passed, and stops at the first failure.
 */
public final class AgoraClient {
  private static final long DEADLINE_SECS = 10;
  private static final String ERROR_DOMAIN = "agora";
  private static final String PASSWORD = "correct horse battery";
  private static final Metadata.Key<byte[]> STATUS_DETAILS =
      Metadata.Key.of("grpc-status-details-bin", Metadata.BINARY_BYTE_MARSHALLER);

  /** A check's outcome differs from what the contract promises. */
  private static final class CheckFailed extends RuntimeException {
    CheckFailed(String expected, Object got) {
      super("expected " + expected + ", got " + got);
    }
  }

  private static void expect(boolean condition, String expected, Object got) {
    if (!condition) {
      throw new CheckFailed(expected, got);
    }
  }

  private final ManagedChannel channel;
  private final String runId = UUID.randomUUID().toString().replace("-", "");
  private final String email = "java-" + runId + "@example.com";
  private int passed;

  private String userId;
  private Metadata bearer;
  private Post post;

  private AgoraClient(String target) {
    channel = Grpc.newChannelBuilder(target, InsecureChannelCredentials.create()).build();
  }

  /** {@code stub} with a fresh deadline, and the caller's token when {@code authenticated}. */
  private <S extends AbstractStub<S>> S call(S stub, boolean authenticated) {
    S withDeadline = stub.withDeadlineAfter(DEADLINE_SECS, TimeUnit.SECONDS);
    return authenticated
        ? withDeadline.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(bearer))
        : withDeadline;
  }

  private UserServiceGrpc.UserServiceBlockingStub users() {
    return call(UserServiceGrpc.newBlockingStub(channel), false);
  }

  private AuthServiceGrpc.AuthServiceBlockingStub auth() {
    return call(AuthServiceGrpc.newBlockingStub(channel), false);
  }

  private PostServiceGrpc.PostServiceBlockingStub posts(boolean authenticated) {
    return call(PostServiceGrpc.newBlockingStub(channel), authenticated);
  }

  private VoteServiceGrpc.VoteServiceBlockingStub votes() {
    return call(VoteServiceGrpc.newBlockingStub(channel), true);
  }

  private void check(String name, Supplier<String> step) {
    String detail;
    try {
      detail = step.get();
    } catch (CheckFailed failure) {
      System.out.println("FAIL " + name + ": " + failure.getMessage());
      throw failure;
    } catch (StatusRuntimeException error) {
      System.out.println("FAIL " + name + ": expected success, got " + describe(error));
      throw new CheckFailed("success", describe(error));
    } catch (RuntimeException error) { // a stub or library that misbehaves
      String got = error.getClass().getSimpleName() + ": " + error.getMessage();
      System.out.println("FAIL " + name + ": expected success, got " + got);
      throw new CheckFailed("success", got);
    }
    passed++;
    System.out.println("ok   " + name + ": " + detail);
  }

  /**
   * The {@code google.rpc.Status} of a failed call, decoded from its
   * {@code grpc-status-details-bin} trailer with the classes generated from the
   * vendored google/rpc protos.
   */
  private static com.google.rpc.Status details(StatusRuntimeException error) {
    Metadata trailers = Status.trailersFromThrowable(error);
    byte[] encoded = trailers == null ? null : trailers.get(STATUS_DETAILS);
    expect(encoded != null, "a grpc-status-details-bin trailer", "none");
    try {
      return com.google.rpc.Status.parseFrom(encoded);
    } catch (InvalidProtocolBufferException malformed) {
      throw new CheckFailed("a google.rpc.Status", malformed.getMessage());
    }
  }

  private static <T extends com.google.protobuf.Message> List<T> detailsOf(
      com.google.rpc.Status status, Class<T> type) {
    List<T> found = new ArrayList<>();
    for (Any detail : status.getDetailsList()) {
      if (detail.is(type)) {
        try {
          found.add(detail.unpack(type));
        } catch (InvalidProtocolBufferException malformed) {
          throw new CheckFailed("a " + type.getSimpleName(), malformed.getMessage());
        }
      }
    }
    return found;
  }

  private static String describe(StatusRuntimeException error) {
    return error.getStatus().getCode() + ": " + error.getStatus().getDescription();
  }

  /**
   * Runs {@code call}, which must fail with {@code code} and a {@code
   * google.rpc.ErrorInfo} with domain {@code agora} and {@code reason}, one of {@code
   * agora.errors.v1.ErrorReason}; returns the decoded status.
   */
  private static com.google.rpc.Status expectError(
      Runnable call, Status.Code code, String reason) {
    ErrorReason.valueOf("ERROR_REASON_" + reason); // throws if the contract has no such reason
    String expected = code + " with reason " + reason;
    try {
      call.run();
    } catch (StatusRuntimeException error) {
      expect(error.getStatus().getCode() == code, expected, describe(error));
      com.google.rpc.Status status = details(error);
      expect(
          status.getCode() == code.value(),
          "google.rpc.Status code " + code.value(),
          status.getCode());
      List<ErrorInfo> infos = detailsOf(status, ErrorInfo.class);
      expect(infos.size() == 1, expected + ": one google.rpc.ErrorInfo", infos.size());
      ErrorInfo info = infos.get(0);
      expect(
          info.getDomain().equals(ERROR_DOMAIN) && info.getReason().equals(reason),
          expected + ", domain " + ERROR_DOMAIN,
          info.getDomain() + "/" + info.getReason());
      return status;
    }
    throw new CheckFailed(expected, "success");
  }

  private String createUser() {
    User user =
        users()
            .createUser(
                CreateUserRequest.newBuilder()
                    .setEmail(email)
                    .setPassword(PASSWORD)
                    .setRequestId(UUID.randomUUID().toString())
                    .build())
            .getUser();
    expect(!user.getId().isEmpty(), "a user id", "an empty one");
    expect(user.getEmail().equals(email), "email " + email, user.getEmail());
    expect(user.hasCreateTime(), "a create_time", "none");
    userId = user.getId();
    return "user " + userId;
  }

  private String login() {
    LoginResponse response =
        auth()
            .login(
                LoginRequest.newBuilder()
                    .setEmail(email)
                    .setPassword(PASSWORD)
                    .build());
    expect(response.getTokenType().equals("bearer"), "token_type bearer", response.getTokenType());
    expect(!response.getAccessToken().isEmpty(), "an access token", "an empty one");
    long expiresIn = response.getExpiresIn().getSeconds();
    expect(expiresIn > 0, "expires_in > 0 (a Duration)", expiresIn);
    bearer = new Metadata();
    bearer.put(
        Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER),
        "Bearer " + response.getAccessToken());
    return "bearer token, expires in " + expiresIn + " s";
  }

  private String createPost() {
    String title = "Hello from Java " + runId;
    Post created =
        posts(true)
            .createPost(
                CreatePostRequest.newBuilder()
                    .setPost(
                        Post.newBuilder()
                            .setTitle(title)
                            .setContent("Written through stubs generated from proto/."))
                    .setRequestId(UUID.randomUUID().toString())
                    .build())
            .getPost();
    expect(!created.getId().isEmpty(), "a post id", "an empty one");
    expect(created.getTitle().equals(title), "title " + title, created.getTitle());
    expect(created.getOwnerId().equals(userId), "owner_id " + userId, created.getOwnerId());
    expect(
        created.hasPublished() && created.getPublished(),
        "published true (absent means true)",
        created.hasPublished() ? created.getPublished() : "absent");
    expect(!created.getEtag().isEmpty(), "an etag", "an empty one");
    post = created;
    return "post " + post.getId();
  }

  private String getPost() {
    Post got =
        posts(true).getPost(GetPostRequest.newBuilder().setId(post.getId()).build()).getPost();
    expect(got.getId().equals(post.getId()), "id " + post.getId(), got.getId());
    expect(got.getTitle().equals(post.getTitle()), "title " + post.getTitle(), got.getTitle());
    expect(
        got.hasOwner() && got.getOwner().getId().equals(userId),
        "owner.id " + userId,
        got.getOwner().getId());
    expect(
        got.hasLikeCount() && got.getLikeCount() == 0,
        "like_count present and 0",
        got.hasLikeCount() ? got.getLikeCount() : "absent");
    expect(
        got.hasLikedByCaller() && !got.getLikedByCaller(),
        "liked_by_caller present and false",
        got.hasLikedByCaller() ? got.getLikedByCaller() : "absent");
    expect(got.getEtag().equals(post.getEtag()), "etag " + post.getEtag(), got.getEtag());
    return "same post, owner profile and no likes";
  }

  private VoteRequest like() {
    return VoteRequest.newBuilder()
        .setPostId(post.getId())
        .setDirection(VoteDirection.VOTE_DIRECTION_ADD)
        .build();
  }

  private String vote() {
    long likes = votes().vote(like()).getLikeCount();
    expect(likes == 1, "like_count 1", likes);
    return "like_count 1";
  }

  private String listPosts() {
    List<Post> listed =
        posts(true)
            .listPosts(ListPostsRequest.newBuilder().setPageSize(100).setSearch(runId).build())
            .getPostsList();
    List<Post> found = new ArrayList<>();
    for (Post each : listed) {
      if (each.getId().equals(post.getId())) {
        found.add(each);
      }
    }
    expect(found.size() == 1, "post " + post.getId() + " listed once", found.size());
    Post mine = found.get(0);
    expect(
        mine.hasLikeCount() && mine.getLikeCount() == 1,
        "like_count 1",
        mine.hasLikeCount() ? mine.getLikeCount() : "absent");
    expect(mine.getLikedByCaller(), "liked_by_caller true", mine.getLikedByCaller());
    return "listed with like_count 1 and liked_by_caller";
  }

  private String voteAgain() {
    expectError(() -> votes().vote(like()), Status.Code.ALREADY_EXISTS, "ALREADY_LIKED");
    return "ALREADY_EXISTS ALREADY_LIKED";
  }

  private String createPostInvalid() {
    com.google.rpc.Status status =
        expectError(
            () ->
                posts(true)
                    .createPost(
                        CreatePostRequest.newBuilder()
                            .setPost(Post.newBuilder().setTitle("").setContent("No title."))
                            .build()),
            Status.Code.INVALID_ARGUMENT,
            "INVALID_FIELDS");
    List<BadRequest> badRequests = detailsOf(status, BadRequest.class);
    expect(badRequests.size() == 1, "one google.rpc.BadRequest", badRequests.size());
    List<String> fields = new ArrayList<>();
    for (BadRequest.FieldViolation violation : badRequests.get(0).getFieldViolationsList()) {
      fields.add(violation.getField());
    }
    expect(fields.equals(List.of("post.title")), "a field violation for post.title", fields);
    return "INVALID_FIELDS with BadRequest naming post.title";
  }

  private String getPostWithoutToken() {
    expectError(
        () -> posts(false).getPost(GetPostRequest.newBuilder().setId(post.getId()).build()),
        Status.Code.UNAUTHENTICATED,
        "TOKEN_MISSING");
    return "UNAUTHENTICATED TOKEN_MISSING";
  }

  private String getUnknownPost() {
    String unknown = UUID.randomUUID().toString();
    expectError(
        () -> posts(true).getPost(GetPostRequest.newBuilder().setId(unknown).build()),
        Status.Code.NOT_FOUND,
        "POST_NOT_FOUND");
    return "NOT_FOUND POST_NOT_FOUND for " + unknown;
  }

  private void run() {
    check("UserService/CreateUser", this::createUser);
    check("AuthService/Login", this::login);
    check("PostService/CreatePost", this::createPost);
    check("PostService/GetPost", this::getPost);
    check("VoteService/Vote ADD", this::vote);
    check("PostService/ListPosts", this::listPosts);
    check("VoteService/Vote ADD again", this::voteAgain);
    check("PostService/CreatePost invalid", this::createPostInvalid);
    check("PostService/GetPost without token", this::getPostWithoutToken);
    check("PostService/GetPost unknown id", this::getUnknownPost);
  }

  public static void main(String[] args) throws InterruptedException {
    if (args.length != 1) {
      System.err.println("usage: java AgoraClient HOST:PORT");
      System.exit(2);
    }
    AgoraClient client = new AgoraClient(args[0]);
    int failed = 0;
    try {
      client.run();
    } catch (CheckFailed failure) {
      failed = 1;
    } finally {
      client.channel.shutdownNow().awaitTermination(DEADLINE_SECS, TimeUnit.SECONDS);
    }
    System.out.println("java client: " + client.passed + " passed, " + failed + " failed");
    System.exit(failed == 0 ? 0 : 1);
  }
}
