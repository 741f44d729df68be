/*
 * bulkhead-guest - the agent of the Bulkhead Linux test guest, started by /init.
 *
 * Reads the guest's name and colour from the kernel command line (bulkhead.name=,
 * bulkhead.color=RRGGBB), then, forever:
 *   - paints every framebuffer (/dev/fb*) with the colour and the name in large letters, again
 *     whenever a framebuffer appears, is replaced or changes mode (a GPU hot-plugged or passed
 *     through); polled once a second;
 *   - reports every input event its kernel delivers on /dev/input/event*, opening devices as
 *     they appear (polled every 200 ms);
 *   - reports its USB devices and its PCI display devices at start and whenever they change
 *     (polled once a second).
 * Everything is said as one line per fact on every serial/hypervisor console the kernel has
 * (see README.md, "Console protocol"). Polling, not inotify or netlink, keeps this small and
 * obviously correct; at these rates it costs nothing measurable.
 *
 * Built static (gcc -static -Os) so the initramfs needs no libc.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fb.h>
#include <linux/input.h>
#include <linux/kd.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "font8x8.h"

#define TICK_MS 200             /* input devices are looked for this often */
#define SLOW_EVERY 5            /* framebuffers, USB and PCI every 5 ticks: once a second */
#define MAX_NAME 40             /* longer names are cut (and the cut is reported) */
#define MAX_CONSOLES 8
#define MAX_INPUTS 64
#define MAX_FBS 8
#define LIST_LEN 2048           /* room for the USB / PCI id lists (10 bytes per device) */
#define DEFAULT_NAME "Linux"
#define DEFAULT_COLOR 0x455a64u /* blue grey */

/* ------------------------------------------------------------------ consoles */

static int console_fds[MAX_CONSOLES];
static int n_consoles;

/*
 * Every console the kernel registered (/proc/consoles), except the virtual terminals: the screen
 * belongs to the painting. /dev/console alone would reach only the last console= of the command
 * line, and a Xen HVM guest may have both ttyS0 and hvc0.
 */
static void open_consoles(void)
{
    FILE *f = fopen("/proc/consoles", "re");
    char line[256];
    while (f && fgets(line, sizeof line, f) && n_consoles < MAX_CONSOLES) {
        char name[64], path[80];
        if (sscanf(line, "%63s", name) != 1)
            continue;
        if (strncmp(name, "tty", 3) == 0 && isdigit((unsigned char)name[3]))
            continue;
        snprintf(path, sizeof path, "/dev/%s", name);
        int fd = open(path, O_WRONLY | O_NOCTTY | O_CLOEXEC);
        if (fd >= 0)
            console_fds[n_consoles++] = fd;
    }
    if (f)
        fclose(f);
    if (n_consoles == 0) {
        int fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
        console_fds[n_consoles++] = fd >= 0 ? fd : STDOUT_FILENO;
    }
}

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* a console that fails must not stop the others */
        buf += n;
        len -= (size_t)n;
    }
}

/* One protocol line on every console, written with a single write() so lines do not interleave. */
__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
    char line[LIST_LEN + 256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    for (int i = 0; i < n_consoles; i++)
        write_all(console_fds[i], line, (size_t)n);
}

/* Printable ASCII only, with no quote or backslash, so a line always parses. */
static void sanitize(char *s)
{
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7e || *s == '"' || *s == '\\')
            *s = '?';
}

/* ------------------------------------------------------------------ kernel command line */

struct guest_config {
    char name[MAX_NAME + 1];
    uint32_t color; /* 0xRRGGBB */
};

static int parse_color(const char *s, uint32_t *out)
{
    if (*s == '#')
        s++;
    if (strlen(s) != 6)
        return -1;
    for (int i = 0; i < 6; i++)
        if (!isxdigit((unsigned char)s[i]))
            return -1;
    *out = (uint32_t)strtoul(s, NULL, 16);
    return 0;
}

/*
 * The keys bulkhead.name= and bulkhead.color=. The kernel keeps dotted keys away from init's
 * arguments, so they are read from /proc/cmdline, splitting on spaces outside double quotes as
 * the kernel does (bulkhead.name="Lab 2" is one argument).
 */
static void read_config(struct guest_config *cfg)
{
    snprintf(cfg->name, sizeof cfg->name, "%s", DEFAULT_NAME);
    cfg->color = DEFAULT_COLOR;
    char cmdline[4096] = "";
    FILE *f = fopen("/proc/cmdline", "re");
    if (f) {
        if (!fgets(cmdline, sizeof cmdline, f))
            cmdline[0] = '\0';
        fclose(f);
    }
    const char *p = cmdline;
    while (*p) {
        while (*p == ' ' || *p == '\n' || *p == '\t')
            p++;
        char arg[sizeof cmdline];
        size_t n = 0;
        int quoted = 0;
        for (; *p && (quoted || (*p != ' ' && *p != '\n' && *p != '\t')); p++) {
            if (*p == '"')
                quoted = !quoted;
            else
                arg[n++] = *p;
        }
        arg[n] = '\0';
        if (strncmp(arg, "bulkhead.name=", 14) == 0) {
            const char *v = arg + 14;
            if (*v == '\0') {
                say("BULKHEAD-LINUX-GUEST error: kernel command line: bulkhead.name is empty; "
                    "using the name %s",
                    DEFAULT_NAME);
                continue;
            }
            if (strlen(v) > MAX_NAME)
                say("BULKHEAD-LINUX-GUEST error: kernel command line: bulkhead.name is %zu "
                    "characters long; using its first %d",
                    strlen(v), MAX_NAME);
            snprintf(cfg->name, sizeof cfg->name, "%.*s", MAX_NAME, v);
            sanitize(cfg->name);
        } else if (strncmp(arg, "bulkhead.color=", 15) == 0) {
            if (parse_color(arg + 15, &cfg->color) < 0) {
                char shown[64];
                snprintf(shown, sizeof shown, "%s", arg + 15);
                sanitize(shown);
                say("BULKHEAD-LINUX-GUEST error: kernel command line: bulkhead.color=\"%s\" is "
                    "not a colour as six hex digits RRGGBB; painting %06x instead",
                    shown, DEFAULT_COLOR);
                cfg->color = DEFAULT_COLOR;
            }
        }
    }
}

/* ------------------------------------------------------------------ framebuffers */

struct fb_seen {
    char node[16];
    ino_t ino; /* a framebuffer replaced by another (efifb -> bochs) gets a new node */
    uint32_t xres, yres, bpp;
};

static struct fb_seen fbs[MAX_FBS];
static int n_fbs;

static uint32_t channel(uint32_t value8, const struct fb_bitfield *bf)
{
    if (bf->length == 0)
        return 0;
    uint32_t v = bf->length >= 8 ? value8 << (bf->length - 8) : value8 >> (8 - bf->length);
    return v << bf->offset;
}

static void put_pixel(uint8_t *row, uint32_t x, uint32_t bytes, uint32_t pixel)
{
    for (uint32_t i = 0; i < bytes; i++) /* x86 framebuffers are little-endian */
        row[x * bytes + i] = (uint8_t)(pixel >> (8 * i));
}

/* Fills one framebuffer with the colour and draws the name centred. 0 or -1 with *why set. */
static int paint(int fd, const struct fb_var_screeninfo *var, const struct fb_fix_screeninfo *fix,
                 const struct guest_config *cfg, const char **why)
{
    uint32_t bytes = var->bits_per_pixel / 8;
    if (var->bits_per_pixel != 16 && var->bits_per_pixel != 24 && var->bits_per_pixel != 32) {
        *why = "only 16, 24 and 32 bits per pixel can be painted";
        return -1;
    }
    if (fix->visual != FB_VISUAL_TRUECOLOR && fix->visual != FB_VISUAL_DIRECTCOLOR) {
        *why = "its visual is not true colour";
        return -1;
    }
    uint32_t w = var->xres, h = var->yres, row_bytes = w * bytes;
    uint32_t stride = fix->line_length ? fix->line_length : row_bytes;
    if (w == 0 || h == 0 || stride < row_bytes) {
        *why = "its mode is inconsistent (no pixels, or a line shorter than its width)";
        return -1;
    }
    uint32_t r = cfg->color >> 16, g = (cfg->color >> 8) & 0xff, b = cfg->color & 0xff;
    uint32_t bg = channel(r, &var->red) | channel(g, &var->green) | channel(b, &var->blue);
    /* dark ink on a light colour, white ink on a dark one */
    uint32_t ink_level = (299 * r + 587 * g + 114 * b) / 1000 > 140 ? 0 : 255;
    uint32_t ink = channel(ink_level, &var->red) | channel(ink_level, &var->green) |
                   channel(ink_level, &var->blue);

    /* The whole visible height, full strides: padding and columns left of xoffset get the colour too. */
    uint32_t xoff = var->xoffset;
    if ((uint64_t)(xoff + w) * bytes > stride)
        xoff = 0;
    size_t frame_len = (size_t)stride * h;
    uint8_t *frame = calloc(1, frame_len);
    if (!frame) {
        *why = "out of memory for a frame";
        return -1;
    }
    for (uint32_t x = 0; x < stride / bytes; x++)
        put_pixel(frame, x, bytes, bg);
    for (uint32_t y = 1; y < h; y++)
        memcpy(frame + (size_t)y * stride, frame, stride);

    /* 8x8 glyphs scaled up to x8, smaller when the name would not fit in 90% of the width */
    size_t len = strlen(cfg->name);
    uint32_t scale = len ? (uint32_t)((w * 9 / 10) / (len * 8)) : 1;
    if (scale > 8)
        scale = 8;
    if (scale > h / 24)
        scale = h / 24;
    if (scale < 1)
        scale = 1;
    uint32_t text_w = (uint32_t)len * 8 * scale, text_h = 8 * scale;
    uint32_t x0 = text_w < w ? (w - text_w) / 2 : 0, y0 = text_h < h ? (h - text_h) / 2 : 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)cfg->name[i];
        if (c < FONT_FIRST || c > FONT_LAST)
            c = '?';
        for (uint32_t gy = 0; gy < 8 * scale && y0 + gy < h; gy++) {
            uint8_t bits = font8x8[c - FONT_FIRST][gy / scale];
            uint8_t *row = frame + (size_t)(y0 + gy) * stride;
            for (uint32_t gx = 0; gx < 8 * scale; gx++) {
                uint32_t x = x0 + (uint32_t)i * 8 * scale + gx;
                if (x < w && (bits & (0x80 >> (gx / scale))))
                    put_pixel(row, xoff + x, bytes, ink);
            }
        }
    }

    /*
     * One write() of whole lines, not mmap and not line by line: DRM's emulated fbdev (bochs,
     * virtio-gpu, cirrus) copies its shadow buffer to the screen only for the damage a write
     * reports, and Linux 6.1 computes an empty damage rectangle for a write that covers exactly
     * one line (drm_fb_helper_memory_range_to_clip: the end column wraps to 0), so line-by-line
     * writes never reached the screen. A multi-line write is damaged across the full width.
     */
    ioctl(fd, FBIOBLANK, FB_BLANK_UNBLANK);
    int rc = 0;
    size_t done = 0;
    off_t at = (off_t)var->yoffset * stride;
    while (done < frame_len) {
        ssize_t n = pwrite(fd, frame + done, frame_len - done, at + (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *why = "writing to it failed";
            rc = -1;
            break;
        }
        done += (size_t)n;
    }
    free(frame);
    return rc;
}

/* Paints each framebuffer that is new, replaced, or in a new mode since the last look. */
static void scan_framebuffers(const struct guest_config *cfg)
{
    struct fb_seen now[MAX_FBS];
    int n_now = 0;
    DIR *d = opendir("/dev");
    struct dirent *e;
    while (d && (e = readdir(d)) && n_now < MAX_FBS) {
        if (strncmp(e->d_name, "fb", 2) != 0 || !isdigit((unsigned char)e->d_name[2]))
            continue;
        char path[64];
        snprintf(path, sizeof path, "/dev/%s", e->d_name);
        int fd = open(path, O_RDWR | O_CLOEXEC);
        struct stat st;
        struct fb_var_screeninfo var;
        struct fb_fix_screeninfo fix;
        if (fd < 0)
            continue;
        if (fstat(fd, &st) < 0 || ioctl(fd, FBIOGET_VSCREENINFO, &var) < 0 ||
            ioctl(fd, FBIOGET_FSCREENINFO, &fix) < 0) {
            close(fd);
            continue;
        }
        struct fb_seen *s = &now[n_now++];
        snprintf(s->node, sizeof s->node, "%s", e->d_name);
        s->ino = st.st_ino;
        s->xres = var.xres;
        s->yres = var.yres;
        s->bpp = var.bits_per_pixel;
        int known = 0;
        for (int i = 0; i < n_fbs; i++)
            known |= strcmp(fbs[i].node, s->node) == 0 && fbs[i].ino == s->ino &&
                     fbs[i].xres == s->xres && fbs[i].yres == s->yres && fbs[i].bpp == s->bpp;
        if (!known) {
            char driver[sizeof fix.id + 1];
            snprintf(driver, sizeof driver, "%.*s", (int)sizeof fix.id, fix.id);
            sanitize(driver);
            const char *why = "";
            if (paint(fd, &var, &fix, cfg, &why) == 0)
                say("BULKHEAD-FB painted node=%s %ux%u bpp=%u stride=%u driver=\"%s\"", s->node,
                    var.xres, var.yres, var.bits_per_pixel, fix.line_length, driver);
            else
                say("BULKHEAD-LINUX-GUEST error: /dev/%s (driver \"%s\", %ux%u, %u bpp): %s",
                    s->node, driver, var.xres, var.yres, var.bits_per_pixel, why);
        }
        close(fd);
    }
    if (d)
        closedir(d);
    memcpy(fbs, now, sizeof now);
    n_fbs = n_now;
}

/*
 * Keeps the kernel's text console (fbcon, vgacon) from drawing over the painting, and its
 * cursor from blinking in it, including on framebuffers that appear later.
 */
static void hide_text_console(void)
{
    int fd = open("/dev/tty0", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd >= 0) {
        ioctl(fd, KDSETMODE, KD_GRAPHICS);
        close(fd);
    }
}

/* ------------------------------------------------------------------ input */

struct input_dev {
    char node[16];
    ino_t ino;
    int fd;
    char name[128];
};

static struct input_dev inputs[MAX_INPUTS];
static int n_inputs;

static void drop_input(int i)
{
    say("BULKHEAD-INPUT-DEV removed node=%s dev=\"%s\"", inputs[i].node, inputs[i].name);
    close(inputs[i].fd);
    inputs[i] = inputs[--n_inputs];
}

/* Opens event devices that appeared (or were replaced), forgets those that went away. */
static void scan_inputs(void)
{
    int seen[MAX_INPUTS] = {0};
    DIR *d = opendir("/dev/input");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, "event", 5) != 0)
            continue;
        char path[64];
        struct stat st;
        snprintf(path, sizeof path, "/dev/input/%s", e->d_name);
        if (stat(path, &st) < 0)
            continue;
        int known = -1;
        for (int i = 0; i < n_inputs; i++)
            if (strcmp(inputs[i].node, e->d_name) == 0 && inputs[i].ino == st.st_ino)
                known = i;
        if (known >= 0) {
            seen[known] = 1;
            continue;
        }
        if (n_inputs == MAX_INPUTS)
            continue;
        int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
            continue;
        struct input_dev *in = &inputs[n_inputs];
        snprintf(in->node, sizeof in->node, "%s", e->d_name);
        in->ino = st.st_ino;
        in->fd = fd;
        if (ioctl(fd, EVIOCGNAME(sizeof in->name - 1), in->name) < 0)
            snprintf(in->name, sizeof in->name, "?");
        in->name[sizeof in->name - 1] = '\0';
        sanitize(in->name);
        seen[n_inputs++] = 1;
        say("BULKHEAD-INPUT-DEV added node=%s dev=\"%s\"", in->node, in->name);
    }
    if (d)
        closedir(d);
    for (int i = n_inputs - 1; i >= 0; i--)
        if (!seen[i]) {
            seen[i] = seen[n_inputs - 1]; /* drop_input moves the last entry into slot i */
            drop_input(i);
        }
}

static void read_input(int i)
{
    struct input_event ev[64];
    for (;;) {
        ssize_t n = read(inputs[i].fd, ev, sizeof ev);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) { /* ENODEV: unplugged */
            drop_input(i);
            return;
        }
        for (size_t k = 0; k < (size_t)n / sizeof ev[0]; k++) {
            /* frame markers and raw scan codes would only slow the console down */
            if (ev[k].type == EV_SYN || (ev[k].type == EV_MSC && ev[k].code == MSC_SCAN))
                continue;
            say("BULKHEAD-INPUT dev=\"%s\" type=%u code=%u value=%d", inputs[i].name, ev[k].type,
                ev[k].code, ev[k].value);
        }
    }
}

/* ------------------------------------------------------------------ USB and PCI */

/* The contents of a sysfs file without "0x" and the line end, or "" when it cannot be read. */
static void read_id(const char *dir, const char *name, const char *file, char *out, size_t size)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s/%s", dir, name, file);
    out[0] = '\0';
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    char buf[64] = "";
    if (fgets(buf, sizeof buf, f)) {
        buf[strcspn(buf, "\n")] = '\0';
        snprintf(out, size, "%s", strncmp(buf, "0x", 2) == 0 ? buf + 2 : buf);
    }
    fclose(f);
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * "vid:pid vid:pid ..." sorted, or "none". USB: every device but the root hubs (usbN) and
 * interfaces (names with ':'). PCI: every function of class 0x03 (display controllers).
 */
static void id_list(int pci, char *out, size_t size)
{
    const char *dir = pci ? "/sys/bus/pci/devices" : "/sys/bus/usb/devices";
    char ids[128][16];
    char *sorted[128];
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) && n < 128) {
        char a[16], b[16], cls[16];
        if (e->d_name[0] == '.')
            continue;
        if (pci) {
            read_id(dir, e->d_name, "class", cls, sizeof cls);
            if (strncmp(cls, "03", 2) != 0)
                continue;
            read_id(dir, e->d_name, "vendor", a, sizeof a);
            read_id(dir, e->d_name, "device", b, sizeof b);
        } else {
            if (strchr(e->d_name, ':') || strncmp(e->d_name, "usb", 3) == 0)
                continue;
            read_id(dir, e->d_name, "idVendor", a, sizeof a);
            read_id(dir, e->d_name, "idProduct", b, sizeof b);
        }
        if (!a[0] || !b[0])
            continue; /* still being set up: next second */
        snprintf(ids[n], sizeof ids[n], "%.4s:%.4s", a, b);
        sorted[n] = ids[n];
        n++;
    }
    if (d)
        closedir(d);
    qsort(sorted, (size_t)n, sizeof sorted[0], compare_strings);
    snprintf(out, size, "%s", n ? "" : "none");
    for (int i = 0; i < n; i++) {
        size_t used = strlen(out);
        snprintf(out + used, size - used, "%s%s", i ? " " : "", sorted[i]);
    }
}

static void report_devices(void)
{
    static char last_usb[LIST_LEN], last_pci[LIST_LEN];
    static int reported;
    char usb[LIST_LEN], pci[LIST_LEN];
    id_list(0, usb, sizeof usb);
    id_list(1, pci, sizeof pci);
    if (!reported || strcmp(usb, last_usb) != 0)
        say("BULKHEAD-USB %s", usb);
    if (!reported || strcmp(pci, last_pci) != 0)
        say("BULKHEAD-PCI-DISPLAY %s", pci);
    memcpy(last_usb, usb, sizeof usb);
    memcpy(last_pci, pci, sizeof pci);
    reported = 1;
}

/* ------------------------------------------------------------------ main loop */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(void)
{
    struct guest_config cfg;
    open_consoles();
    read_config(&cfg);
    hide_text_console();
    /* Devices present at boot are open and painted before READY: a key sent after READY is seen. */
    scan_inputs();
    scan_framebuffers(&cfg);
    say("BULKHEAD-LINUX-GUEST READY name=%s", cfg.name);
    report_devices();

    int64_t next_tick = now_ms() + TICK_MS;
    for (unsigned tick = 1;;) {
        struct pollfd pfds[MAX_INPUTS];
        for (int i = 0; i < n_inputs; i++)
            pfds[i] = (struct pollfd){.fd = inputs[i].fd, .events = POLLIN};
        int64_t wait = next_tick - now_ms();
        int ready = poll(pfds, (nfds_t)n_inputs, wait > 0 ? (int)wait : 0);
        /* Backwards, so a device dropped on a read error does not shift the ones still to read. */
        for (int i = n_inputs - 1; ready > 0 && i >= 0; i--)
            if (pfds[i].revents)
                read_input(i);
        if (now_ms() < next_tick)
            continue;
        next_tick += TICK_MS;
        if (next_tick < now_ms()) /* the guest was paused: do not catch up tick by tick */
            next_tick = now_ms() + TICK_MS;
        scan_inputs();
        if (++tick % SLOW_EVERY == 0) {
            scan_framebuffers(&cfg);
            report_devices();
        }
    }
}
