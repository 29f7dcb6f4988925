// Text files imported whole: `import text from './file?raw'`. vitest (vite)
// handles the suffix itself; scripts/bundle.mjs has a plugin that does the same.
declare module '*?raw' {
  const text: string;
  export default text;
}
