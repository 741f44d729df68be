/*
 * kernel.c - the Bulkhead test guest.
 *
 * A tiny freestanding multiboot kernel used by Bulkhead's tests and demo:
 *   - reads `name=` and `color=#rrggbb` from the kernel command line,
 *   - paints the whole screen with that color and draws the name big in the
 *     middle (Bochs VBE 640x480x32 linear framebuffer; VGA text mode fallback),
 *   - polls the i8042 for PS/2 keyboard and mouse input, and
 *   - reports every event on COM1 (115200 8N1), one per line:
 *
 *       BULKHEAD-GUEST READY name=<name>
 *       KEY <down|up> <scancode>        set-1 make code, lowercase hex, 2 digits
 *                                       per byte, e0/e1 prefixes kept (e01d)
 *       BTN <down|up> <left|right|middle>
 *       REL <dx> <dy>                   signed decimal, as in the PS/2 packet
 *                                       (dy > 0 means "up")
 *
 * The CPU sleeps in HLT between events: IRQ1/IRQ12 only wake it up, all
 * device reading is done by polling. Nothing here is time-driven, so the PIT
 * is stopped: an idle guest costs its host (TCG, often nested) next to nothing.
 */
#include <stddef.h>
#include <stdint.h>

#include "font8x8.h"

/* ------------------------------------------------------------------ libc */

void *memset(void *d, int c, size_t n) {
    uint8_t *p = d;
    while (n--) *p++ = (uint8_t)c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n) {
    uint8_t *p = d;
    const uint8_t *q = s;
    while (n--) *p++ = *q++;
    return d;
}

void *memmove(void *d, const void *s, size_t n) {
    uint8_t *p = d;
    const uint8_t *q = s;
    if (p < q) {
        while (n--) *p++ = *q++;
    } else {
        while (n--) p[n] = q[n];
    }
    return d;
}

int memcmp(const void *a, const void *b, size_t n) {
    const uint8_t *p = a, *q = b;
    for (; n; n--, p++, q++)
        if (*p != *q) return *p - *q;
    return 0;
}

static size_t str_len(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

/* ------------------------------------------------------------------- I/O */

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) {
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint16_t inw(uint16_t port) {
    uint16_t v;
    __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint32_t inl(uint16_t port) {
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/* ---------------------------------------------------------------- serial */

#define COM1 0x3F8

static void serial_init(void) {
    outb(COM1 + 1, 0x00); /* no UART interrupts */
    outb(COM1 + 3, 0x80); /* DLAB */
    outb(COM1 + 0, 0x01); /* divisor 1 = 115200 baud */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); /* 8N1 */
    outb(COM1 + 2, 0xC7); /* FIFO on, cleared, 14-byte threshold */
    outb(COM1 + 4, 0x03); /* DTR + RTS */
}

static void serial_putc(char c) {
    for (uint32_t spin = 0; spin < 100000 && !(inb(COM1 + 5) & 0x20); spin++) {
    }
    outb(COM1, (uint8_t)c);
}

static void serial_write(const char *s) {
    while (*s) serial_putc(*s++);
}

/* --------------------------------------------------------- line builder */

struct line {
    char buf[64];
    size_t len;
};

static void line_str(struct line *l, const char *s) {
    while (*s && l->len < sizeof l->buf - 1) l->buf[l->len++] = *s++;
    l->buf[l->len] = 0;
}

static void line_hex8(struct line *l, uint8_t v) {
    static const char hex[] = "0123456789abcdef";
    char s[3] = {hex[v >> 4], hex[v & 15], 0};
    line_str(l, s);
}

static void line_hex32(struct line *l, uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) line_hex8(l, (uint8_t)(v >> shift));
}

static void line_dec(struct line *l, int32_t v) {
    char s[12];
    int i = sizeof s - 1;
    uint32_t u = v < 0 ? (uint32_t)(-(int64_t)v) : (uint32_t)v;
    s[i] = 0;
    do {
        s[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u && i > 1);
    if (v < 0) s[--i] = '-';
    line_str(l, s + i);
}

/* ------------------------------------------------------------- settings */

#define NAME_MAX_LEN 40

static char guest_name[NAME_MAX_LEN + 1] = "guest";
static uint32_t guest_color = 0x808080; /* 0xRRGGBB */
static char color_text[8] = "#808080";

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Accepts "#rrggbb", "rrggbb", "#rgb" and "rgb". Returns 0 on success. */
static int parse_color(const char *s, size_t n, uint32_t *out) {
    if (n && s[0] == '#') s++, n--;
    if (n != 6 && n != 3) return -1;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        int d = hex_digit(s[i]);
        if (d < 0) return -1;
        v = (v << 4) | (uint32_t)d;
        if (n == 3) v = (v << 4) | (uint32_t)d;
    }
    *out = v;
    return 0;
}

/*
 * QEMU hands a multiboot kernel "<kernel path> <-append string>". We look at
 * every whitespace separated word; `name=` and `color=` are ours, the rest is
 * ignored. A value may be double-quoted to contain spaces: name="my vm".
 */
static void parse_cmdline(const char *cmd) {
    if (!cmd) return;
    const char *p = cmd;
    while (*p) {
        while (*p == ' ' || *p == '\t') p++;
        if (!*p) break;
        const char *key = p;
        while (*p && *p != '=' && *p != ' ' && *p != '\t') p++;
        size_t key_len = (size_t)(p - key);
        const char *val = p;
        size_t val_len = 0;
        if (*p == '=') {
            p++;
            if (*p == '"') {
                val = ++p;
                while (*p && *p != '"') p++;
                val_len = (size_t)(p - val);
                if (*p == '"') p++;
            } else {
                val = p;
                while (*p && *p != ' ' && *p != '\t') p++;
                val_len = (size_t)(p - val);
            }
        } else {
            while (*p && *p != ' ' && *p != '\t') p++;
            continue;
        }
        if (key_len == 4 && !memcmp(key, "name", 4) && val_len > 0) {
            size_t n = val_len > NAME_MAX_LEN ? NAME_MAX_LEN : val_len;
            for (size_t i = 0; i < n; i++) {
                char c = val[i];
                guest_name[i] = (c >= 0x20 && c <= 0x7e) ? c : '?';
            }
            guest_name[n] = 0;
        } else if (key_len == 5 && !memcmp(key, "color", 5)) {
            uint32_t c;
            if (parse_color(val, val_len, &c) == 0) guest_color = c;
        }
    }
    struct line l = {{0}, 0};
    line_str(&l, "#");
    line_hex8(&l, (uint8_t)(guest_color >> 16));
    line_hex8(&l, (uint8_t)(guest_color >> 8));
    line_hex8(&l, (uint8_t)guest_color);
    memcpy(color_text, l.buf, sizeof color_text);
}

/* ------------------------------------------------------------------ PCI */

static uint32_t pci_read32(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t off) {
    outl(0xCF8, 0x80000000u | ((uint32_t)bus << 16) | ((uint32_t)dev << 11) | ((uint32_t)fn << 8) | (off & 0xFC));
    return inl(0xCFC);
}

static void pci_write32(uint8_t bus, uint8_t dev, uint8_t fn, uint8_t off, uint32_t v) {
    outl(0xCF8, 0x80000000u | ((uint32_t)bus << 16) | ((uint32_t)dev << 11) | ((uint32_t)fn << 8) | (off & 0xFC));
    outl(0xCFC, v);
}

/* Finds the Bochs/QEMU std VGA (1234:1111) and returns its BAR0 (the linear
 * framebuffer), or 0. Bus 0 is scanned first; that is where -vga std lives. */
static uint32_t find_bochs_vga_fb(void) {
    for (uint32_t bus = 0; bus < 256; bus++) {
        for (uint8_t dev = 0; dev < 32; dev++) {
            for (uint8_t fn = 0; fn < 8; fn++) {
                uint32_t id = pci_read32((uint8_t)bus, dev, fn, 0x00);
                if ((id & 0xFFFF) == 0xFFFF) {
                    if (fn == 0) break;
                    continue;
                }
                if (id == 0x11111234u) {
                    uint32_t bar0 = pci_read32((uint8_t)bus, dev, fn, 0x10);
                    if (bar0 & 1) continue; /* I/O BAR: not ours */
                    uint32_t cmd = pci_read32((uint8_t)bus, dev, fn, 0x04);
                    if (!(cmd & 0x2)) pci_write32((uint8_t)bus, dev, fn, 0x04, cmd | 0x2); /* memory space */
                    return bar0 & 0xFFFFFFF0u;
                }
                if (fn == 0) {
                    uint32_t hdr = pci_read32((uint8_t)bus, dev, 0, 0x0C);
                    if (!(hdr & 0x00800000u)) break; /* not multi-function */
                }
            }
        }
    }
    return 0;
}

/* --------------------------------------------------------------- display */

#define VBE_INDEX 0x1CE
#define VBE_DATA 0x1CF
#define VBE_ID 0
#define VBE_XRES 1
#define VBE_YRES 2
#define VBE_BPP 3
#define VBE_ENABLE 4
#define VBE_VIRT_WIDTH 6
#define VBE_X_OFFSET 8
#define VBE_Y_OFFSET 9
#define VBE_ENABLED 0x01
#define VBE_LFB_ENABLED 0x40

#define SCREEN_W 640
#define SCREEN_H 480

static void vbe_write(uint16_t idx, uint16_t v) {
    outw(VBE_INDEX, idx);
    outw(VBE_DATA, v);
}

static uint16_t vbe_read(uint16_t idx) {
    outw(VBE_INDEX, idx);
    return inw(VBE_DATA);
}

static volatile uint32_t *fb;     /* 32 bpp linear framebuffer, or NULL */
static uint32_t fb_pitch;         /* in pixels */
static volatile uint16_t *vga_text; /* fallback: 80x25 text mode */
static uint32_t fg_color;         /* white or black, whichever reads better */
static uint8_t text_attr;         /* fallback attribute */

static const char *display_kind = "none";

static int vbe_init(void) {
    uint16_t id = vbe_read(VBE_ID);
    if (id < 0xB0C0 || id > 0xB0CF) return -1;
    uint32_t addr = find_bochs_vga_fb();
    if (!addr) return -1;
    vbe_write(VBE_ENABLE, 0);
    vbe_write(VBE_XRES, SCREEN_W);
    vbe_write(VBE_YRES, SCREEN_H);
    vbe_write(VBE_BPP, 32);
    vbe_write(VBE_ENABLE, VBE_ENABLED | VBE_LFB_ENABLED);
    vbe_write(VBE_X_OFFSET, 0);
    vbe_write(VBE_Y_OFFSET, 0);
    if (vbe_read(VBE_XRES) != SCREEN_W || vbe_read(VBE_YRES) != SCREEN_H || vbe_read(VBE_BPP) != 32) {
        vbe_write(VBE_ENABLE, 0);
        return -1;
    }
    uint16_t vw = vbe_read(VBE_VIRT_WIDTH);
    fb_pitch = vw >= SCREEN_W ? vw : SCREEN_W;
    fb = (volatile uint32_t *)(uintptr_t)addr;
    return 0;
}

static void fill_rect(int x, int y, int w, int h, uint32_t c) {
    if (x < 0) w += x, x = 0;
    if (y < 0) h += y, y = 0;
    if (x + w > SCREEN_W) w = SCREEN_W - x;
    if (y + h > SCREEN_H) h = SCREEN_H - y;
    for (int j = 0; j < h; j++) {
        volatile uint32_t *row = fb + (uint32_t)(y + j) * fb_pitch + (uint32_t)x;
        for (int i = 0; i < w; i++) row[i] = c;
    }
}

static void draw_char(int x, int y, char ch, int scale, uint32_t c) {
    uint8_t u = (uint8_t)ch;
    if (u < FONT_FIRST || u > FONT_LAST) u = '?';
    const uint8_t *g = font8x8[u - FONT_FIRST];
    for (int r = 0; r < 8; r++) {
        uint8_t bits = g[r];
        if (!bits) continue;
        for (int col = 0; col < 8; col++)
            if (bits & (0x80 >> col)) fill_rect(x + col * scale, y + r * scale, scale, scale, c);
    }
}

static void draw_text(int x, int y, const char *s, int scale, uint32_t c) {
    for (; *s; s++, x += 8 * scale) draw_char(x, y, *s, scale, c);
}

static void draw_text_centered(int y, const char *s, int scale, uint32_t c) {
    int w = (int)str_len(s) * 8 * scale;
    draw_text((SCREEN_W - w) / 2, y, s, scale, c);
}

/* Closest of the 8 VGA background colors, for the text-mode fallback. */
static uint8_t nearest_vga_bg(uint32_t rgb) {
    static const uint32_t pal[8] = {0x000000, 0x0000AA, 0x00AA00, 0x00AAAA, 0xAA0000, 0xAA00AA, 0xAA5500, 0xAAAAAA};
    int r = (int)(rgb >> 16) & 255, g = (int)(rgb >> 8) & 255, b = (int)rgb & 255;
    uint8_t best = 0;
    int best_d = 0x7FFFFFFF;
    for (uint8_t i = 0; i < 8; i++) {
        int dr = r - (int)((pal[i] >> 16) & 255), dg = g - (int)((pal[i] >> 8) & 255), db = b - (int)(pal[i] & 255);
        int d = dr * dr + dg * dg + db * db;
        if (d < best_d) best_d = d, best = i;
    }
    return best;
}

static void text_put(int col, int row, const char *s) {
    for (; *s && col < 80; s++, col++)
        if (col >= 0) vga_text[row * 80 + col] = (uint16_t)((uint16_t)text_attr << 8 | (uint8_t)*s);
}

static void text_clear_rows(int first, int last) {
    for (int i = first * 80; i < (last + 1) * 80; i++) vga_text[i] = (uint16_t)((uint16_t)text_attr << 8 | ' ');
}

/* ---- screen layout (framebuffer) */

#define EVENT_LINES 8
#define EVENT_CHARS 36
#define EVENT_SCALE 2
#define EVENT_X 32
#define EVENT_Y 296
#define EVENT_LINE_H (8 * EVENT_SCALE + 4)

static char events[EVENT_LINES][EVENT_CHARS + 1];
static uint32_t event_count;

static void display_init(void) {
    uint32_t r = (guest_color >> 16) & 255, g = (guest_color >> 8) & 255, b = guest_color & 255;
    int light = (r * 299 + g * 587 + b * 114) / 1000 > 140;
    fg_color = light ? 0x000000 : 0xFFFFFF;

    if (vbe_init() == 0) {
        display_kind = "vbe";
        fill_rect(0, 0, SCREEN_W, SCREEN_H, guest_color);
        draw_text_centered(24, "BULKHEAD TEST GUEST", 2, fg_color);
        int len = (int)str_len(guest_name);
        int scale = 6;
        while (scale > 1 && len * 8 * scale > SCREEN_W - 32) scale--;
        draw_text_centered(168 - 4 * scale, guest_name, scale, fg_color);
        draw_text_centered(220, color_text, 2, fg_color);
        fill_rect(EVENT_X, EVENT_Y - 10, SCREEN_W - 2 * EVENT_X, 2, fg_color);
        return;
    }
    /* Fallback: VGA text mode as left by the BIOS. */
    display_kind = "text";
    vga_text = (volatile uint16_t *)0xB8000;
    text_attr = (uint8_t)(nearest_vga_bg(guest_color) << 4 | (light ? 0x0 : 0xF));
    outb(0x3D4, 0x0A); /* hide the hardware cursor */
    outb(0x3D5, 0x20);
    text_clear_rows(0, 24);
    text_put(30, 2, "BULKHEAD TEST GUEST");
    text_put(40 - (int)str_len(guest_name) / 2, 10, guest_name);
    text_put(36, 12, color_text);
}

/* Redraws one line of the on-screen event log per call, so that the main
 * loop can go back to the i8042 between lines. */
static uint32_t redraw_line = EVENT_LINES;

static void events_redraw_step(void) {
    uint32_t i = redraw_line++;
    uint32_t n = event_count < EVENT_LINES ? event_count : EVENT_LINES;
    /* oldest first, newest at the bottom */
    const char *s = i < n ? events[(event_count - n + i) % EVENT_LINES] : "";
    if (fb) {
        fill_rect(EVENT_X, EVENT_Y + (int)i * EVENT_LINE_H, SCREEN_W - 2 * EVENT_X, EVENT_LINE_H, guest_color);
        draw_text(EVENT_X, EVENT_Y + (int)i * EVENT_LINE_H, s, EVENT_SCALE, fg_color);
    } else if (vga_text) {
        text_clear_rows(15 + (int)i, 15 + (int)i);
        text_put(22, 15 + (int)i, s);
    }
}

/* Every event: one line on COM1 at once, the on-screen log later. */
static void emit(struct line *l) {
    serial_write(l->buf);
    serial_write("\n");
    char *dst = events[event_count % EVENT_LINES];
    size_t n = l->len > EVENT_CHARS ? EVENT_CHARS : l->len;
    memcpy(dst, l->buf, n);
    dst[n] = 0;
    event_count++;
    redraw_line = 0; /* the log scrolled: redraw it all, a line at a time */
}

/* ------------------------------------------------------- interrupts, PIC */

struct idt_entry {
    uint16_t off_lo;
    uint16_t sel;
    uint8_t zero;
    uint8_t flags;
    uint16_t off_hi;
} __attribute__((packed));

struct idt_ptr {
    uint16_t limit;
    uint32_t base;
} __attribute__((packed));

struct isr_frame {
    uint32_t edi, esi, ebp, esp, ebx, edx, ecx, eax; /* pusha */
    uint32_t vector, err;
    uint32_t eip, cs, eflags;
};

extern const uint32_t isr_table[48];
static struct idt_entry idt[256];

static void pic_init(void) {
    outb(0x20, 0x11); /* ICW1: init, ICW4 needed */
    outb(0xA0, 0x11);
    outb(0x21, 0x20); /* ICW2: master vectors 0x20.. */
    outb(0xA1, 0x28); /*       slave vectors 0x28.. */
    outb(0x21, 0x04); /* ICW3: slave on IRQ2 */
    outb(0xA1, 0x02);
    outb(0x21, 0x01); /* ICW4: 8086 mode */
    outb(0xA1, 0x01);
    outb(0x21, (uint8_t)~((1 << 1) | (1 << 2))); /* keyboard, cascade */
    outb(0xA1, (uint8_t)~(1 << 4));               /* IRQ12: mouse */
}

/* The BIOS leaves PIT channel 0 ticking at 18.2 Hz. IRQ0 is masked anyway,
 * but QEMU would still run a host timer for it: mode 0 (interrupt on terminal
 * count) fires once and then leaves the channel idle. No periodic wake-up is
 * needed: the only wake-up sources are the i8042 IRQs (see kmain's loop). */
static void pit_stop(void) {
    outb(0x43, 0x30); /* channel 0, lobyte/hibyte, mode 0, binary */
    outb(0x40, 0x01);
    outb(0x40, 0x00);
}

/* Reads a PIC's In-Service Register: a spurious IRQ7/IRQ15 leaves its bit clear. */
static uint8_t pic_isr(uint16_t cmd_port) {
    outb(cmd_port, 0x0B); /* OCW3: read ISR */
    return inb(cmd_port);
}

static void idt_init(void) {
    for (int i = 0; i < 48; i++) {
        idt[i].off_lo = (uint16_t)isr_table[i];
        idt[i].off_hi = (uint16_t)(isr_table[i] >> 16);
        idt[i].sel = 0x08;
        idt[i].zero = 0;
        idt[i].flags = 0x8E; /* present, ring 0, 32-bit interrupt gate */
    }
    struct idt_ptr p = {sizeof idt - 1, (uint32_t)(uintptr_t)idt};
    __asm__ volatile("lidt %0" ::"m"(p));
}

void isr_handler(struct isr_frame *f);
void isr_handler(struct isr_frame *f) {
    if (f->vector >= 32) {
        /* IRQs only wake the main loop out of HLT. A spurious IRQ7 needs no
         * EOI, a spurious IRQ15 only the master's (for the cascade). */
        if (f->vector == 32 + 7 && !(pic_isr(0x20) & 0x80)) return;
        if (f->vector == 32 + 15 && !(pic_isr(0xA0) & 0x80)) {
            outb(0x20, 0x20);
            return;
        }
        if (f->vector >= 40) outb(0xA0, 0x20);
        outb(0x20, 0x20);
        return;
    }
    if (f->vector == 2 || f->vector == 1 || f->vector == 3) return; /* NMI, debug, breakpoint */
    struct line l = {{0}, 0};
    line_str(&l, "BULKHEAD-GUEST FAULT vector=");
    line_dec(&l, (int32_t)f->vector);
    line_str(&l, " err=");
    line_hex32(&l, f->err);
    line_str(&l, " eip=");
    line_hex32(&l, f->eip);
    serial_write(l.buf);
    serial_write("\n");
    for (;;) __asm__ volatile("cli; hlt");
}

/* ---------------------------------------------------------------- i8042 */

#define I8042_DATA 0x60
#define I8042_STATUS 0x64
#define I8042_CMD 0x64
#define ST_OUT_FULL 0x01
#define ST_IN_FULL 0x02
#define ST_AUX_DATA 0x20

static int i8042_wait_write(void) {
    for (uint32_t i = 0; i < 200000; i++)
        if (!(inb(I8042_STATUS) & ST_IN_FULL)) return 0;
    return -1;
}

/* Waits for a byte; returns it, or -1 on timeout. */
static int i8042_read(void) {
    for (uint32_t i = 0; i < 200000; i++)
        if (inb(I8042_STATUS) & ST_OUT_FULL) return inb(I8042_DATA);
    return -1;
}

static void i8042_cmd(uint8_t c) {
    i8042_wait_write();
    outb(I8042_CMD, c);
}

static void i8042_data(uint8_t d) {
    i8042_wait_write();
    outb(I8042_DATA, d);
}

static void i8042_flush(void) {
    for (int i = 0; i < 64 && (inb(I8042_STATUS) & ST_OUT_FULL); i++) (void)inb(I8042_DATA);
}

/* Sends a byte to a device (keyboard, or mouse via 0xD4) and waits for its
 * 0xFA ACK, discarding anything else that arrives meanwhile. */
static int ps2_send(int aux, uint8_t byte) {
    for (int attempt = 0; attempt < 3; attempt++) {
        if (aux) i8042_cmd(0xD4);
        i8042_data(byte);
        for (int n = 0; n < 16; n++) {
            int r = i8042_read();
            if (r < 0) break;
            if (r == 0xFA) return 0;
            if (r == 0xFE) break; /* resend */
        }
    }
    return -1;
}

static int mouse_ok;

static void input_init(void) {
    i8042_cmd(0xAD); /* disable keyboard port while we set up */
    i8042_cmd(0xA7); /* disable aux port */
    i8042_flush();

    i8042_cmd(0x20); /* read controller configuration byte */
    int cfg = i8042_read();
    if (cfg < 0) cfg = 0x45;
    cfg |= 0x01 | 0x02 | 0x40; /* IRQ1, IRQ12, keep set-1 translation */
    cfg &= ~(0x10 | 0x20);      /* clocks on for both ports */
    i8042_cmd(0x60);
    i8042_data((uint8_t)cfg);

    i8042_cmd(0xAE); /* enable keyboard port */
    i8042_cmd(0xA8); /* enable aux port */
    i8042_flush();

    ps2_send(0, 0xF4);                            /* keyboard: enable scanning */
    mouse_ok = ps2_send(1, 0xF6) == 0;            /* mouse: defaults */
    mouse_ok = mouse_ok && ps2_send(1, 0xF4) == 0; /* mouse: enable streaming */
    i8042_flush();
}

/* ---- keyboard: scancode set 1 (translated) */

static uint8_t kbd_prefix;    /* 0, 0xE0 or 0xE1 */
static uint8_t kbd_e1_first;  /* first byte after an E1 prefix */
static int kbd_e1_pending;

static void kbd_byte(uint8_t b) {
    if (b == 0xE0 || b == 0xE1) {
        kbd_prefix = b;
        kbd_e1_pending = 0;
        return;
    }
    /* 0x00 / 0xFF: key detection error or overrun, never a key. (0xFA, 0xFE,
     * 0xEE are only replies to commands, which we stop sending after init,
     * and are also the break codes of 7a, 7e and 6e: they are keys here.) */
    if (!kbd_prefix && (b == 0x00 || b == 0xFF)) return;

    struct line l = {{0}, 0};
    if (kbd_prefix == 0xE1) {
        /* Pause: E1 1D 45 (make), E1 9D C5 (break) */
        if (!kbd_e1_pending) {
            kbd_e1_first = b;
            kbd_e1_pending = 1;
            return;
        }
        kbd_e1_pending = 0;
        kbd_prefix = 0;
        line_str(&l, (b & 0x80) ? "KEY up e1" : "KEY down e1");
        line_hex8(&l, kbd_e1_first & 0x7F);
        line_hex8(&l, b & 0x7F);
        emit(&l);
        return;
    }
    uint8_t make = b & 0x7F;
    int up = b & 0x80;
    int extended = kbd_prefix == 0xE0;
    kbd_prefix = 0;
    /* E0 2A / E0 AA / E0 36 / E0 B6 are "fake shifts" around some extended
     * keys (e.g. Print Screen); they are not keys of their own. */
    if (extended && (make == 0x2A || make == 0x36)) return;
    line_str(&l, up ? "KEY up " : "KEY down ");
    if (extended) line_str(&l, "e0");
    line_hex8(&l, make);
    emit(&l);
}

/* ---- mouse: standard 3-byte PS/2 packets */

static uint8_t mouse_pkt[3];
static int mouse_idx;
static uint8_t mouse_buttons;

static void mouse_byte(uint8_t b) {
    if (mouse_idx == 0 && !(b & 0x08)) return; /* resync: bit 3 is always set in byte 0 */
    mouse_pkt[mouse_idx++] = b;
    if (mouse_idx < 3) return;
    mouse_idx = 0;

    uint8_t flags = mouse_pkt[0];
    int32_t dx = (int32_t)mouse_pkt[1] - ((flags & 0x10) ? 256 : 0);
    int32_t dy = (int32_t)mouse_pkt[2] - ((flags & 0x20) ? 256 : 0);
    if (dx || dy) {
        struct line l = {{0}, 0};
        line_str(&l, "REL ");
        line_dec(&l, dx);
        line_str(&l, " ");
        line_dec(&l, dy);
        emit(&l);
    }
    static const char *const names[3] = {"left", "right", "middle"};
    uint8_t changed = (flags ^ mouse_buttons) & 0x07;
    for (int i = 0; i < 3; i++) {
        if (!(changed & (1 << i))) continue;
        struct line l = {{0}, 0};
        line_str(&l, (flags & (1 << i)) ? "BTN down " : "BTN up ");
        line_str(&l, names[i]);
        emit(&l);
    }
    mouse_buttons = flags & 0x07;
}

/* ------------------------------------------------------------------ main */

struct multiboot_info {
    uint32_t flags;
    uint32_t mem_lower, mem_upper;
    uint32_t boot_device;
    uint32_t cmdline;
};

void kmain(uint32_t magic, const struct multiboot_info *mbi);
void kmain(uint32_t magic, const struct multiboot_info *mbi) {
    serial_init();
    idt_init();
    pic_init();
    pit_stop();

    if (magic == 0x2BADB002u && mbi && (mbi->flags & (1u << 2)) && mbi->cmdline)
        parse_cmdline((const char *)(uintptr_t)mbi->cmdline);

    display_init();
    input_init();

    struct line l = {{0}, 0};
    line_str(&l, "BULKHEAD-GUEST INFO display=");
    line_str(&l, display_kind);
    line_str(&l, " color=");
    line_str(&l, color_text);
    line_str(&l, mouse_ok ? " mouse=ok" : " mouse=absent");
    serial_write(l.buf);
    serial_write("\n");
    serial_write("BULKHEAD-GUEST READY name=");
    serial_write(guest_name);
    serial_write("\n");

    for (;;) {
        __asm__ volatile("cli");
        uint8_t st = inb(I8042_STATUS);
        if (st & ST_OUT_FULL) {
            uint8_t b = inb(I8042_DATA);
            if (st & ST_AUX_DATA)
                mouse_byte(b);
            else
                kbd_byte(b);
            continue;
        }
        if (redraw_line < EVENT_LINES) {
            events_redraw_step();
            continue;
        }
        /* Nothing pending: sleep until the next IRQ. STI takes effect after
         * the following instruction, so no wake-up can be lost in between:
         * the i8042 raises IRQ1/IRQ12 while its output buffer is full, and we
         * only get here with it empty (checked with interrupts off), so the
         * next byte is a fresh edge, latched by the PIC and delivered at HLT. */
        __asm__ volatile("sti; hlt" ::: "memory");
    }
}
