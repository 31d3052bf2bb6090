(function(){
var d=document,i=d.getElementById('photo');
if(!i||!window.DataTransfer||!window.createImageBitmap)return;
var max=+i.dataset.max||2048;
function shrink(file){return new Promise(function(ok){
if(!/^image\/(jpeg|png|webp)$/.test(file.type))return ok(file);
createImageBitmap(file,{imageOrientation:'from-image'}).then(function(p){
var k=Math.min(1,max/Math.max(p.width,p.height)),c=d.createElement('canvas'),x=c.getContext('2d');
c.width=Math.round(p.width*k);c.height=Math.round(p.height*k);
x.fillStyle='#fff';x.fillRect(0,0,c.width,c.height);x.drawImage(p,0,0,c.width,c.height);
c.toBlob(function(j){ok(j&&j.size<file.size?new File([j],'anh.jpg',{type:'image/jpeg'}):file)},'image/jpeg',.8)
},function(){ok(file)})})}
i.addEventListener('change',function(){var b=i.form.querySelector('[type=submit]');b.disabled=true;
Promise.all([].map.call(i.files,shrink)).then(function(l){var t=new DataTransfer();
l.forEach(function(x){t.items.add(x)});i.files=t.files;b.disabled=false})})
})()
