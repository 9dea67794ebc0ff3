// The 12 device profiles: Playwright's own descriptors where it has them.
"use strict";

const { devices } = require("playwright-core");

function device(name) {
  const d = devices[name];
  if (!d) throw new Error(`playwright-core has no device ${name}`);
  const { defaultBrowserType, ...options } = d; // always Chromium here
  return { name, ...options };
}

const desktop = (name, width, height) => ({
  name, viewport: { width, height }, deviceScaleFactor: 1, isMobile: false, hasTouch: false,
  userAgent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
});

const profiles = [
  device("iPhone SE"),
  device("iPhone 14"),
  device("iPhone 14 Pro Max"),
  device("Pixel 7"),
  device("Galaxy S9+"),
  device("iPad Mini"),
  device("iPad Pro 11"),
  device("Galaxy Tab S4"),
  desktop("Laptop 1280×720", 1280, 720),
  desktop("Desktop 1920×1080", 1920, 1080),
  desktop("Desktop 2560×1440", 2560, 1440),
  {
    name: "Low-end phone 360×640", viewport: { width: 360, height: 640 }, deviceScaleFactor: 1.5, isMobile: true, hasTouch: true,
    userAgent: "Mozilla/5.0 (Linux; Android 11; Go Edition) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Mobile Safari/537.36",
  },
];

module.exports = { profiles };
