// Thin, synchronous wrappers over the Linux evdev and uinput ioctls, plus a libuv poll watcher
// so that reading never blocks the event loop. Every failure becomes a JS Error carrying
// {code, errno, syscall, path}; src/evdev-native.ts turns it into an EvdevError. Nothing here
// aborts the process: a vanished device (ENODEV) is an ordinary error the caller handles.
#include <napi.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/input.h>
#include <linux/uinput.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace {

const char* ErrnoName(int e) {
  switch (e) {
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case ENODEV: return "ENODEV";
    case ENXIO: return "ENXIO";
    case EBUSY: return "EBUSY";
    case EAGAIN: return "EAGAIN";
    case EINVAL: return "EINVAL";
    case EBADF: return "EBADF";
    case ENOTTY: return "ENOTTY";
    case EIO: return "EIO";
    case EINTR: return "EINTR";
    case ENOMEM: return "ENOMEM";
    case EEXIST: return "EEXIST";
    case ENOSPC: return "ENOSPC";
    case EFAULT: return "EFAULT";
    default: return "EUNKNOWN";
  }
}

// Builds (does not throw) the error object for errno `e` from `syscall` on `path`.
Napi::Error SysError(Napi::Env env, int e, const char* syscall, const std::string& path) {
  std::string msg = std::string(syscall) + " " + path + ": " + strerror(e) + " (" + ErrnoName(e) + ")";
  Napi::Error err = Napi::Error::New(env, msg);
  err.Set("code", Napi::String::New(env, ErrnoName(e)));
  err.Set("errno", Napi::Number::New(env, e));
  err.Set("syscall", Napi::String::New(env, syscall));
  err.Set("path", Napi::String::New(env, path));
  return err;
}

void ThrowSys(Napi::Env env, int e, const char* syscall, const std::string& path) {
  SysError(env, e, syscall, path).ThrowAsJavaScriptException();
}

bool ArgInt(const Napi::CallbackInfo& info, size_t i, const char* what, int* out) {
  if (info.Length() <= i || !info[i].IsNumber()) {
    Napi::TypeError::New(info.Env(), std::string("argument ") + what + " must be a number").ThrowAsJavaScriptException();
    return false;
  }
  *out = info[i].As<Napi::Number>().Int32Value();
  return true;
}

std::string FdLabel(int fd) { return "fd " + std::to_string(fd); }

// open(path, writable) -> fd. Always non-blocking and close-on-exec.
Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::TypeError::New(env, "open(path, writable): path must be a string").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>();
  bool writable = info.Length() > 1 && info[1].ToBoolean();
  int fd = ::open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    ThrowSys(env, errno, "open", path);
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgInt(info, 0, "fd", &fd)) return env.Undefined();
  if (::close(fd) < 0) ThrowSys(env, errno, "close", FdLabel(fd));
  return env.Undefined();
}

// grab(fd, on): EVIOCGRAB — while grabbed no other reader (console, X, libinput) sees events.
Napi::Value Grab(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgInt(info, 0, "fd", &fd)) return env.Undefined();
  int on = info.Length() > 1 && info[1].ToBoolean() ? 1 : 0;
  if (ioctl(fd, EVIOCGRAB, (void*)(intptr_t)on) < 0) ThrowSys(env, errno, "ioctl(EVIOCGRAB)", FdLabel(fd));
  return env.Undefined();
}

Napi::Value GetName(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgInt(info, 0, "fd", &fd)) return env.Undefined();
  char name[256] = {0};
  if (ioctl(fd, EVIOCGNAME(sizeof(name) - 1), name) < 0) {
    ThrowSys(env, errno, "ioctl(EVIOCGNAME)", FdLabel(fd));
    return env.Undefined();
  }
  return Napi::String::New(env, name);
}

Napi::Value GetId(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgInt(info, 0, "fd", &fd)) return env.Undefined();
  struct input_id id;
  if (ioctl(fd, EVIOCGID, &id) < 0) {
    ThrowSys(env, errno, "ioctl(EVIOCGID)", FdLabel(fd));
    return env.Undefined();
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("bustype", id.bustype);
  o.Set("vendor", id.vendor);
  o.Set("product", id.product);
  o.Set("version", id.version);
  return o;
}

Napi::Array BitsToArray(Napi::Env env, const unsigned char* bits, size_t bytes) {
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  for (size_t i = 0; i < bytes * 8; i++)
    if (bits[i / 8] & (1u << (i % 8))) out.Set(n++, Napi::Number::New(env, (double)i));
  return out;
}

// getBits(fd, evType) -> codes set. evType 0 = the event types the device supports.
Napi::Value GetBits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd, type;
  if (!ArgInt(info, 0, "fd", &fd) || !ArgInt(info, 1, "evType", &type)) return env.Undefined();
  if (type < 0 || type > EV_MAX) {
    Napi::RangeError::New(env, "getBits: evType out of range").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  unsigned char bits[(KEY_MAX + 8) / 8] = {0};
  int len = ioctl(fd, EVIOCGBIT(type, sizeof(bits)), bits);
  if (len < 0) {
    ThrowSys(env, errno, "ioctl(EVIOCGBIT)", FdLabel(fd));
    return env.Undefined();
  }
  return BitsToArray(env, bits, (size_t)len);
}

// getState(fd, evType) -> codes currently on: EV_KEY (EVIOCGKEY), EV_LED (EVIOCGLED), EV_SW.
// Used after SYN_DROPPED to learn which keys are really down.
Napi::Value GetState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd, type;
  if (!ArgInt(info, 0, "fd", &fd) || !ArgInt(info, 1, "evType", &type)) return env.Undefined();
  unsigned char bits[(KEY_MAX + 8) / 8] = {0};
  unsigned long req;
  const char* name;
  switch (type) {
    case EV_KEY: req = EVIOCGKEY(sizeof(bits)); name = "ioctl(EVIOCGKEY)"; break;
    case EV_LED: req = EVIOCGLED(sizeof(bits)); name = "ioctl(EVIOCGLED)"; break;
    case EV_SW: req = EVIOCGSW(sizeof(bits)); name = "ioctl(EVIOCGSW)"; break;
    default:
      Napi::RangeError::New(env, "getState: evType must be EV_KEY, EV_LED or EV_SW").ThrowAsJavaScriptException();
      return env.Undefined();
  }
  int len = ioctl(fd, req, bits);
  if (len < 0) {
    ThrowSys(env, errno, name, FdLabel(fd));
    return env.Undefined();
  }
  return BitsToArray(env, bits, (size_t)len);
}

Napi::Value GetAbsInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd, axis;
  if (!ArgInt(info, 0, "fd", &fd) || !ArgInt(info, 1, "axis", &axis)) return env.Undefined();
  if (axis < 0 || axis > ABS_MAX) {
    Napi::RangeError::New(env, "getAbsInfo: axis out of range").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  struct input_absinfo ai;
  if (ioctl(fd, EVIOCGABS(axis), &ai) < 0) {
    ThrowSys(env, errno, "ioctl(EVIOCGABS)", FdLabel(fd));
    return env.Undefined();
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("value", ai.value);
  o.Set("minimum", ai.minimum);
  o.Set("maximum", ai.maximum);
  o.Set("fuzz", ai.fuzz);
  o.Set("flat", ai.flat);
  o.Set("resolution", ai.resolution);
  return o;
}

// read(fd, buffer) -> bytes read, 0 when nothing is pending (EAGAIN). Never blocks.
Napi::Value Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgInt(info, 0, "fd", &fd)) return env.Undefined();
  if (info.Length() < 2 || !info[1].IsBuffer()) {
    Napi::TypeError::New(env, "read(fd, buffer): buffer must be a Buffer").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Buffer<uint8_t> buf = info[1].As<Napi::Buffer<uint8_t>>();
  ssize_t n;
  do n = ::read(fd, buf.Data(), buf.Length());
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, 0);
    ThrowSys(env, errno, "read", FdLabel(fd));
    return env.Undefined();
  }
  return Napi::Number::New(env, (double)n);
}

// write(fd, buffer) -> bytes written (whole input_event structs: LEDs, uinput output).
Napi::Value Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgInt(info, 0, "fd", &fd)) return env.Undefined();
  if (info.Length() < 2 || !info[1].IsBuffer()) {
    Napi::TypeError::New(env, "write(fd, buffer): buffer must be a Buffer").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Buffer<uint8_t> buf = info[1].As<Napi::Buffer<uint8_t>>();
  ssize_t n;
  do n = ::write(fd, buf.Data(), buf.Length());
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    ThrowSys(env, errno, "write", FdLabel(fd));
    return env.Undefined();
  }
  return Napi::Number::New(env, (double)n);
}

bool SetBit(Napi::Env env, int fd, unsigned long req, int bit, const char* name, const std::string& path) {
  if (ioctl(fd, req, bit) < 0) {
    ThrowSys(env, errno, name, path);
    return false;
  }
  return true;
}

bool CodeList(Napi::Env env, Napi::Object spec, const char* key, std::vector<int>* out) {
  Napi::Value v = spec.Get(key);
  if (v.IsUndefined()) return true;
  if (!v.IsArray()) {
    Napi::TypeError::New(env, std::string("uinputCreate: spec.") + key + " must be an array").ThrowAsJavaScriptException();
    return false;
  }
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value x = a.Get(i);
    if (x.IsObject()) x = x.As<Napi::Object>().Get("axis");
    if (!x.IsNumber()) {
      Napi::TypeError::New(env, std::string("uinputCreate: spec.") + key + " holds a non-number").ThrowAsJavaScriptException();
      return false;
    }
    out->push_back(x.As<Napi::Number>().Int32Value());
  }
  return true;
}

// uinputCreate(uinputPath, {name, bustype, vendor, product, keys, rels, abs:[{axis,min,max}], leds})
//   -> {fd, sysname}. The kernel then creates /sys/devices/virtual/input/<sysname>/event*.
Napi::Value UinputCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject()) {
    Napi::TypeError::New(env, "uinputCreate(path, spec)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>();
  Napi::Object spec = info[1].As<Napi::Object>();
  std::vector<int> keys, rels, abs, leds;
  if (!CodeList(env, spec, "keys", &keys) || !CodeList(env, spec, "rels", &rels) ||
      !CodeList(env, spec, "abs", &abs) || !CodeList(env, spec, "leds", &leds))
    return env.Undefined();
  std::string name = spec.Get("name").IsString() ? spec.Get("name").As<Napi::String>().Utf8Value() : "bulkhead";

  int fd = ::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    ThrowSys(env, errno, "open", path);
    return env.Undefined();
  }
  bool ok = true;
  if (!keys.empty()) ok = ok && SetBit(env, fd, UI_SET_EVBIT, EV_KEY, "ioctl(UI_SET_EVBIT)", path);
  for (int k : keys) ok = ok && SetBit(env, fd, UI_SET_KEYBIT, k, "ioctl(UI_SET_KEYBIT)", path);
  if (!rels.empty()) ok = ok && SetBit(env, fd, UI_SET_EVBIT, EV_REL, "ioctl(UI_SET_EVBIT)", path);
  for (int r : rels) ok = ok && SetBit(env, fd, UI_SET_RELBIT, r, "ioctl(UI_SET_RELBIT)", path);
  if (!leds.empty()) ok = ok && SetBit(env, fd, UI_SET_EVBIT, EV_LED, "ioctl(UI_SET_EVBIT)", path);
  for (int l : leds) ok = ok && SetBit(env, fd, UI_SET_LEDBIT, l, "ioctl(UI_SET_LEDBIT)", path);
  if (ok && !abs.empty()) {
    ok = SetBit(env, fd, UI_SET_EVBIT, EV_ABS, "ioctl(UI_SET_EVBIT)", path);
    Napi::Array absSpec = spec.Get("abs").As<Napi::Array>();
    for (uint32_t i = 0; ok && i < absSpec.Length(); i++) {
      Napi::Value item = absSpec.Get(i);
      struct uinput_abs_setup setup;
      memset(&setup, 0, sizeof(setup));
      setup.code = (uint16_t)abs[i];
      setup.absinfo.minimum = 0;
      setup.absinfo.maximum = 32767;
      if (item.IsObject()) {
        Napi::Object o = item.As<Napi::Object>();
        if (o.Get("min").IsNumber()) setup.absinfo.minimum = o.Get("min").As<Napi::Number>().Int32Value();
        if (o.Get("max").IsNumber()) setup.absinfo.maximum = o.Get("max").As<Napi::Number>().Int32Value();
      }
      ok = SetBit(env, fd, UI_SET_ABSBIT, abs[i], "ioctl(UI_SET_ABSBIT)", path);
      if (ok && ioctl(fd, UI_ABS_SETUP, &setup) < 0) {
        ThrowSys(env, errno, "ioctl(UI_ABS_SETUP)", path);
        ok = false;
      }
    }
  }
  if (ok) {
    struct uinput_setup setup;
    memset(&setup, 0, sizeof(setup));
    strncpy(setup.name, name.c_str(), UINPUT_MAX_NAME_SIZE - 1);
    setup.id.bustype = spec.Get("bustype").IsNumber() ? spec.Get("bustype").As<Napi::Number>().Uint32Value() : BUS_VIRTUAL;
    setup.id.vendor = spec.Get("vendor").IsNumber() ? spec.Get("vendor").As<Napi::Number>().Uint32Value() : 0;
    setup.id.product = spec.Get("product").IsNumber() ? spec.Get("product").As<Napi::Number>().Uint32Value() : 0;
    if (ioctl(fd, UI_DEV_SETUP, &setup) < 0) {
      ThrowSys(env, errno, "ioctl(UI_DEV_SETUP)", path);
      ok = false;
    } else if (ioctl(fd, UI_DEV_CREATE) < 0) {
      ThrowSys(env, errno, "ioctl(UI_DEV_CREATE)", path);
      ok = false;
    }
  }
  if (!ok) {
    ::close(fd);
    return env.Undefined();
  }
  char sysname[64] = {0};
  if (ioctl(fd, UI_GET_SYSNAME(sizeof(sysname) - 1), sysname) < 0) sysname[0] = 0;  // kernels < 3.15
  Napi::Object o = Napi::Object::New(env);
  o.Set("fd", fd);
  o.Set("sysname", Napi::String::New(env, sysname));
  return o;
}

Napi::Value UinputDestroy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgInt(info, 0, "fd", &fd)) return env.Undefined();
  int rc = ioctl(fd, UI_DEV_DESTROY);
  int e = errno;
  ::close(fd);
  if (rc < 0) ThrowSys(env, e, "ioctl(UI_DEV_DESTROY)", FdLabel(fd));
  return env.Undefined();
}

// A libuv poll on one fd: calls back (errorOrNull) on the loop thread whenever the fd is
// readable or failed; JS then drains it with read() until it returns 0.
class Watcher : public Napi::ObjectWrap<Watcher> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Watcher", {InstanceMethod("stop", &Watcher::Stop)});
  }

  Watcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Watcher>(info) {
    Napi::Env env = info.Env();
    int fd;
    if (!ArgInt(info, 0, "fd", &fd)) return;
    if (info.Length() < 2 || !info[1].IsFunction()) {
      Napi::TypeError::New(env, "new Watcher(fd, callback)").ThrowAsJavaScriptException();
      return;
    }
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      Napi::Error::New(env, "no libuv loop").ThrowAsJavaScriptException();
      return;
    }
    handle_ = new uv_poll_t;
    int rc = uv_poll_init(loop, handle_, fd);
    if (rc < 0) {
      delete handle_;
      handle_ = nullptr;
      ThrowSys(env, -rc, "uv_poll_init", FdLabel(fd));
      return;
    }
    handle_->data = this;
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    fd_ = fd;
    rc = uv_poll_start(handle_, UV_READABLE | UV_DISCONNECT, &Watcher::OnPoll);
    if (rc < 0) {
      StopHandle();
      ThrowSys(env, -rc, "uv_poll_start", FdLabel(fd));
      return;
    }
    Ref();  // keep the JS object alive while the poll is active
  }

  ~Watcher() override { StopHandle(); }

 private:
  static void OnPoll(uv_poll_t* h, int status, int events) {
    Watcher* self = static_cast<Watcher*>(h->data);
    if (!self || self->callback_.IsEmpty()) return;
    Napi::Env env = self->callback_.Env();
    Napi::HandleScope scope(env);
    Napi::Value arg = status < 0 ? Napi::Value(SysError(env, -status, "poll", FdLabel(self->fd_)).Value())
                                 : Napi::Value(env.Null());
    self->callback_.MakeCallback(env.Global(), {arg});
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    bool wasActive = handle_ != nullptr;
    StopHandle();
    if (wasActive) Unref();
    return info.Env().Undefined();
  }

  void StopHandle() {
    if (!handle_) return;
    uv_poll_stop(handle_);
    handle_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    handle_ = nullptr;
    if (!callback_.IsEmpty()) callback_.Reset();
  }

  uv_poll_t* handle_ = nullptr;
  Napi::FunctionReference callback_;
  int fd_ = -1;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("open", Napi::Function::New(env, Open));
  exports.Set("close", Napi::Function::New(env, Close));
  exports.Set("grab", Napi::Function::New(env, Grab));
  exports.Set("getName", Napi::Function::New(env, GetName));
  exports.Set("getId", Napi::Function::New(env, GetId));
  exports.Set("getBits", Napi::Function::New(env, GetBits));
  exports.Set("getState", Napi::Function::New(env, GetState));
  exports.Set("getAbsInfo", Napi::Function::New(env, GetAbsInfo));
  exports.Set("read", Napi::Function::New(env, Read));
  exports.Set("write", Napi::Function::New(env, Write));
  exports.Set("uinputCreate", Napi::Function::New(env, UinputCreate));
  exports.Set("uinputDestroy", Napi::Function::New(env, UinputDestroy));
  exports.Set("Watcher", Watcher::Init(env));
  exports.Set("sizeofInputEvent", Napi::Number::New(env, sizeof(struct input_event)));
  return exports;
}

}  // namespace

NODE_API_MODULE(evdev, Init)
