// Checks a person's password with Linux-PAM (Debian's libpam), for Input1.Unlock.
//
// Why native: PAM is a C API with a conversation callback, and the check must run inside the
// root daemon (pam_unix reads /etc/shadow; the UI process must never see a hash or decide). Why a
// worker thread: modules block (pam_unix sleeps on a failure, pam_faildelay), and the daemon's
// event loop carries every key of the seat.
//
// The password is copied once into memory this file owns, handed to PAM through the conversation
// and wiped (explicit_bzero) before the worker finishes; it is never logged or returned.
#include <napi.h>

#include <security/pam_appl.h>
#include <stdlib.h>
#include <string.h>

#include <string>

namespace {

// The conversation's private data: the secret, and whether PAM asked for it.
struct Conversation {
  const char* password;
  int prompts;
};

// Answers every hidden prompt ("Password: ") with the password. A visible prompt (a module asking
// for something we cannot know, e.g. a one-time code) fails the conversation instead of guessing;
// info and error texts are accepted and dropped (they may quote the user, never the secret).
int Converse(int n, const struct pam_message** msg, struct pam_response** resp, void* data) {
  auto* conv = static_cast<Conversation*>(data);
  if (n <= 0 || n > PAM_MAX_NUM_MSG) return PAM_CONV_ERR;
  auto* replies = static_cast<struct pam_response*>(calloc(n, sizeof(struct pam_response)));
  if (!replies) return PAM_BUF_ERR;
  for (int i = 0; i < n; i++) {
    switch (msg[i]->msg_style) {
      case PAM_PROMPT_ECHO_OFF:
        conv->prompts++;
        replies[i].resp = strdup(conv->password);  // PAM frees (and modules wipe) it
        if (!replies[i].resp) goto fail;
        break;
      case PAM_ERROR_MSG:
      case PAM_TEXT_INFO:
        break;
      default:
        goto fail;
    }
  }
  *resp = replies;
  return PAM_SUCCESS;
fail:
  for (int i = 0; i < n; i++) {
    if (replies[i].resp) {
      explicit_bzero(replies[i].resp, strlen(replies[i].resp));
      free(replies[i].resp);
    }
  }
  free(replies);
  return PAM_CONV_ERR;
}

// authenticate(service, user, password, confdir) -> Promise<{ok, code, name, step}>
// `confdir` may be "" (the system's /etc/pam.d); tests pass a directory of their own.
class AuthenticateWorker : public Napi::AsyncWorker {
 public:
  AuthenticateWorker(Napi::Env env, std::string service, std::string user, std::string password,
                     std::string confdir)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        service_(std::move(service)),
        user_(std::move(user)),
        password_(std::move(password)),
        confdir_(std::move(confdir)) {}

  ~AuthenticateWorker() override { Wipe(); }

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    Conversation conv{password_.c_str(), 0};
    struct pam_conv pconv = {Converse, &conv};
    pam_handle_t* pamh = nullptr;
    int rc = confdir_.empty()
                 ? pam_start(service_.c_str(), user_.c_str(), &pconv, &pamh)
                 : pam_start_confdir(service_.c_str(), user_.c_str(), &pconv, confdir_.c_str(), &pamh);
    step_ = "start";
    if (rc == PAM_SUCCESS) {
      step_ = "authenticate";
      // PAM_DISALLOW_NULL_AUTHTOK: an account with an empty password never unlocks the seat.
      rc = pam_authenticate(pamh, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
      if (rc == PAM_SUCCESS) {
        step_ = "account";
        rc = pam_acct_mgmt(pamh, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
      }
      name_ = pam_strerror(pamh, rc);
      pam_end(pamh, rc);
    } else {
      name_ = pam_strerror(nullptr, rc);
    }
    code_ = rc;
    Wipe();
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object r = Napi::Object::New(env);
    r.Set("ok", Napi::Boolean::New(env, code_ == PAM_SUCCESS));
    r.Set("code", Napi::Number::New(env, code_));
    r.Set("name", Napi::String::New(env, name_));
    r.Set("step", Napi::String::New(env, step_));
    deferred_.Resolve(r);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  void Wipe() {
    if (!password_.empty()) explicit_bzero(&password_[0], password_.size());
    password_.clear();
  }

  Napi::Promise::Deferred deferred_;
  std::string service_, user_, password_, confdir_;
  int code_ = PAM_SYSTEM_ERR;
  std::string name_;
  std::string step_;
};

Napi::Value Authenticate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  for (size_t i = 0; i < 4; i++) {
    if (info.Length() <= i || !info[i].IsString()) {
      Napi::TypeError::New(env, "authenticate(service, user, password, confdir): strings expected")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
  }
  std::string password = info[2].As<Napi::String>();
  // A NUL would cut the C string short: "right\0anything" must not pass as "right".
  if (password.find('\0') != std::string::npos) {
    explicit_bzero(&password[0], password.size());
    Napi::TypeError::New(env, "authenticate: the password contains a NUL character").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto* worker = new AuthenticateWorker(env, info[0].As<Napi::String>(), info[1].As<Napi::String>(),
                                        std::move(password), info[3].As<Napi::String>());
  Napi::Promise p = worker->Promise();
  worker->Queue();
  return p;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("authenticate", Napi::Function::New(env, Authenticate));
  return exports;
}

}  // namespace

NODE_API_MODULE(pam, Init)
